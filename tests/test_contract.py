"""The contract suite (lengen/testing.py) over every installed positional encoding plugin.

Plugin authors run the same checks on their own distribution with `pytest --pyargs lengen.testing`.
"""

from lengen.testing import (  # noqa: F401
    test_a_long_input_does_not_change_a_later_short_one,
    test_backend_matches_the_reference_on_cpu,
    test_backend_matches_the_reference_on_cuda,
    test_bfloat16_model_keeps_positions_and_angles_precise,
    test_cached_decoding_equals_uncached,
    test_hook_shapes_and_dtypes,
    test_loads_and_builds_an_example,
    test_one_optimizer_step_trains,
    test_outputs_finite_at_8x_the_training_length,
    test_padding_left_or_right_gives_the_unpadded_logits,
    test_relative_encoding_ignores_a_shift_of_all_positions,
)
