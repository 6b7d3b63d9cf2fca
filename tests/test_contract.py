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
    test_score_bias_compiles_into_a_flex_score_mod,
)


def test_the_suite_runs_on_a_third_party_distribution_and_catches_a_broken_encoding(tmp_path):
    """`pytest --pyargs lengen.testing` on two fake installed plugins: a sound one, a broken one."""
    import os
    import subprocess
    import sys

    from conftest import write_distribution

    write_distribution(
        tmp_path,
        "fake-encodings",
        """
        [lengen.positional_encodings]
        SoundRoPE = fake_encodings:SoundRoPE
        HalfPrecisionRoPE = fake_encodings:HalfPrecisionRoPE
        """,
        {
            "fake_encodings": '''
            import torch
            from lengen_plugins.positional_encodings.rope import RoPE

            class SoundRoPE(RoPE):
                """RoPE with another base."""

                @classmethod
                def example(cls):
                    return cls(base=500.0)

            class HalfPrecisionRoPE(RoPE):
                """RoPE that rounds positions to bfloat16 (the bug the suite must catch)."""

                def _cos_sin(self, positions, dtype):
                    return super()._cos_sin(positions.to(torch.bfloat16), dtype)
            '''
        },
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "--pyargs", "lengen.testing", "-k", "SoundRoPE or HalfPrecisionRoPE"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    outcomes = {}
    for line in result.stdout.splitlines():
        word, _, test = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED"):
            outcomes[test.split(" ")[0].split("::")[-1]] = word
    assert outcomes, result.stdout[-3000:]
    sound = {test: word for test, word in outcomes.items() if "[SoundRoPE" in test}
    broken = {test: word for test, word in outcomes.items() if "[HalfPrecisionRoPE" in test}
    assert len(sound) >= 10 and set(sound.values()) <= {"PASSED", "SKIPPED"}, sound
    for test in (
        "test_bfloat16_model_keeps_positions_and_angles_precise",
        "test_relative_encoding_ignores_a_shift_of_all_positions",
    ):
        assert broken[f"{test}[HalfPrecisionRoPE]"] == "FAILED"
    assert broken["test_loads_and_builds_an_example[HalfPrecisionRoPE]"] == "PASSED"
