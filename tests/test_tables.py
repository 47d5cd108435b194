"""edgec/tables.py: the one table printer (rich) behind the report, analyze, partition,
quantization and profile listings."""

from __future__ import annotations

from edgec.tables import table


def test_columns_align_and_numbers_right_align():
    lines = table(("layer", "op", "MACs"), [("conv1", "Conv", "1,234,567"), ("fc", "Gemm", "12")], right=("MACs",))
    assert lines == ["layer  op         MACs",
                     "conv1  Conv  1,234,567",
                     "fc     Gemm         12"]


def test_long_cells_are_never_wrapped_or_cut():
    """Logs and scripts read rows whole, whatever the terminal's width."""
    reason = "why " * 100
    lines = table(("node", "reason"), [("n", reason.strip())])
    assert len(lines) == 2 and lines[1] == "n     " + reason.strip()


def test_brackets_are_text_not_markup():
    assert table(("name",), [("[bold]x[/bold]",)])[1] == "[bold]x[/bold]"


def test_the_tuning_summary_is_a_table_of_kernels():
    from pathlib import Path

    from edgec.cli import format_tuning
    from edgec.targets.tuning import KernelTuning, TuneSummary

    summary = TuneSummary(Path("db"), "x86-64", 2, [KernelTuning("conv2d", 2, 1e6, 10, 1.5e-5, 2e-5),
                                                    KernelTuning("dense", 1, 1e3, 3, None, 1e-6)], 0, 13)
    lines = format_tuning(summary).splitlines()
    assert lines[0].startswith("13 new trial(s), 0 earlier, 2 thread(s); records in db")
    assert [line.split() for line in lines[1:]] == [["kernel", "calls", "trials", "best", "rules"],
                                                    ["conv2d", "2", "10", "15.0", "20.0"],
                                                    ["dense", "1", "3", "-", "1.0"]]
