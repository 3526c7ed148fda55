"""Rough edges a new user hit on the command line: outputs that cannot be written refused before
any work, a closed pipe (``| head``), help text, plots. Each bad input is exit 2 and one line."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import tempfile

import pytest

from jaxbp.cli import main
from jaxbp.files import check_creatable_dir, check_writable

VERIFY = ["verify", "--sizes", "3,3,2", "--batch", "4", "--sections", "deltas", "--fd-budget", "5"]


def _never_run(*args, **kwargs):  # pragma: no cover - only reached when the bug is back
    raise AssertionError("a check ran before --json was validated")


@pytest.fixture
def no_checks(monkeypatch):
    import jaxbp.verify

    monkeypatch.setattr(jaxbp.verify, "verify_mlp", _never_run)


def _one_error_line(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and captured.out == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("where", ["under_a_file", "missing_folder", "a_folder"])
def test_verify_json_unwritable_is_refused_before_any_check(tmp_path, capsys, no_checks, where):
    (tmp_path / "file").write_text("x")
    target = {
        "under_a_file": tmp_path / "file" / "v.json",
        "missing_folder": tmp_path / "no" / "such" / "v.json",
        "a_folder": tmp_path,
    }[where]
    before = sorted(os.listdir(tmp_path))
    assert main([*VERIFY, "--json", str(target)]) == 2
    _one_error_line(capsys, "--json: ", str(target))
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_verify_json_in_a_read_only_place_is_refused_before_any_check(
    tmp_path, capsys, no_checks, monkeypatch
):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main([*VERIFY, "--json", str(tmp_path / "v.json")]) == 2
    _one_error_line(capsys, "--json: ", "v.json", "Read-only file system")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_verify_json_in_a_folder_without_write_permission(tmp_path, capsys, no_checks):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main([*VERIFY, "--json", str(folder / "v.json")]) == 2
        _one_error_line(capsys, "--json: ", "Permission denied")
    finally:
        folder.chmod(0o755)


def test_verify_case_json_unwritable_is_refused_before_the_case_is_imported(tmp_path, capsys):
    case = tmp_path / "case.py"
    case.write_text("raise SystemExit('imported')\n")
    (tmp_path / "file").write_text("x")
    argv = ["verify", "--case", f"{case}:f", "--json", str(tmp_path / "file" / "v.json")]
    assert main(argv) == 2
    _one_error_line(capsys, "--json: ", "is a file, not a folder")


def test_check_writable_and_creatable_dir_leave_nothing_behind(tmp_path):
    assert check_writable(tmp_path / "a.json") == tmp_path / "a.json"
    assert check_creatable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert os.listdir(tmp_path) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        check_creatable_dir(tmp_path / "f")
    with pytest.raises(ValueError, match=r"f is a file, not a folder"):
        check_creatable_dir(tmp_path / "f" / "run")


# --- a closed pipe: `jaxbp … | head` -----------------------------------------------------------


class _ClosedPipe(io.TextIOBase):
    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def fileno(self):
        raise io.UnsupportedOperation("no file descriptor")


def test_broken_pipe_exits_quietly_in_process(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(VERIFY) == 141
    assert capsys.readouterr().err == ""


def test_broken_pipe_through_a_real_pipe_exits_quietly(tmp_path):
    """The reader is gone before anything is written (``| head -0``): no traceback, and the
    status a shell reports for a tool stopped by SIGPIPE."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxbp", *VERIFY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    proc.stdout.close()  # like `| head -0`: nobody reads
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert "BrokenPipe" not in err and "Traceback" not in err


# --- parsers: no abbreviations, help without markup, with choices and defaults ------------------


def _subparsers():
    from jaxbp.cli import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return parser, action.choices


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "--size", "3,2"],
        ["demo", "--step", "2"],
        ["bench", "--quic"],
        ["train", "--epoch", "2"],  # parsed only: refused before anything runs
    ],
)
def test_abbreviated_flags_are_refused(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    _one_error_line(capsys, "unrecognized arguments", argv[1])
    assert os.listdir(tmp_path) == []


def test_every_parser_is_without_abbreviations():
    parser, subs = _subparsers()
    assert not parser.allow_abbrev
    assert {name: p.allow_abbrev for name, p in subs.items()} == dict.fromkeys(subs, False)


def test_help_has_no_raw_markup():
    parser, subs = _subparsers()
    for name, p in [("jaxbp", parser), *subs.items()]:
        text = p.format_help()
        for markup in ("``", ":func:", ":class:", ":mod:", ":data:", ":meth:"):
            assert markup not in text, (name, markup)


def test_strip_markup():
    from jaxbp.cli import strip_markup

    assert strip_markup("``jaxbp train`` and :func:`jaxbp.verify.check`") == (
        "jaxbp train and jaxbp.verify.check"
    )
    assert strip_markup(":class:`~jaxbp.data.Table` or :py:data:`x`") == "Table or x"
    assert strip_markup("plain `one` backtick") == "plain `one` backtick"


def test_help_lists_valid_values_matching_the_registries():
    from jaxbp.activations import ACTIVATIONS
    from jaxbp.bench import CONFIGS, METHODS
    from jaxbp.losses import OUTPUTS
    from jaxbp.verify import GRAD_SOURCES, MODES
    from jaxbp.verify.mlp import SECTIONS

    _, subs = _subparsers()
    flat = {name: " ".join(p.format_help().split()) for name, p in subs.items()}
    for name in ("verify", "demo", "bench"):
        assert ", ".join(ACTIVATIONS) in flat[name], name
    for name in ("verify", "demo"):
        assert ", ".join(OUTPUTS) in flat[name], name
    for values in (MODES, GRAD_SOURCES[1:], SECTIONS):
        assert ", ".join(values) in flat["verify"], values
    assert ", ".join(CONFIGS) in flat["bench"] and ", ".join(METHODS) in flat["bench"]
    assert "one of float32, float64; default float64" in flat["demo"]


@pytest.mark.parametrize("name", ["verify", "demo", "bench"])
def test_help_shows_every_default(name):
    from jaxbp.cli.verify import DEFAULTS

    VERIFY_DEFAULTS = DEFAULTS if name == "verify" else {}  # noqa: N806
    _, subs = _subparsers()
    parser = subs[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.dest == "help":
            continue
        if action.default is None and VERIFY_DEFAULTS.get(action.dest) is None:
            continue  # no default (an optional output, --sizes instead of --configs …); verify's
            # defaults live in DEFAULTS (argparse's are None) and are written in the help text
        assert "default" in formatter._expand_help(action), action.option_strings[0]


def test_demo_accepts_per_layer_activations_as_train_and_verify_do(capsys):
    argv = ["demo", "--sizes", "4,5,6,3", "--activation", "relu,tanh", "--steps", "1"]
    assert main([*argv, "--batch", "8"]) == 0
    assert "activation relu,tanh" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--activation", "relu,tanh,elu"], ["--activation: got 3 names for 2 hidden"]),
        (["--activation", "swish"], ["--activation: unknown name 'swish'", "valid names are"]),
        (["--output", "hinge"], ["--output: unknown name 'hinge'", "softmax_ce"]),
    ],
)
def test_demo_bad_activation_or_output_names_the_flag(argv, needles, capsys):
    assert main(["demo", *argv]) == 2
    _one_error_line(capsys, *needles)


# --- library input errors that escape a subcommand ---------------------------------------------


def test_a_checkpoint_or_data_error_escaping_a_subcommand_is_one_line_exit_2(
    monkeypatch, capsys, tmp_path
):
    import jaxbp.cli.verify
    from jaxbp.checkpoint import CheckpointError
    from jaxbp.data import DataError

    for error in (
        CheckpointError(f"{tmp_path}/checkpoint.npz: damaged or incomplete checkpoint"),
        DataError(f"{tmp_path}/d.csv, line 3:\nbad"),
    ):

        def fail(args, error=error):
            raise error

        monkeypatch.setattr(jaxbp.cli.verify, "run", fail)
        assert main(["verify"]) == 2
        line = _one_error_line(capsys, str(tmp_path))
        assert "damaged" in line or "line 3: bad" in line


def test_any_other_value_error_keeps_its_traceback(monkeypatch):
    import jaxbp.cli.verify

    def bug(args):
        raise ValueError("a bug")

    monkeypatch.setattr(jaxbp.cli.verify, "run", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["verify"])


def test_train_help_lists_valid_values_and_defaults():
    from jaxbp.experiment.config import FIELD, FIELD_DEFAULT
    from jaxbp.experiment.rules import choices

    _, subs = _subparsers()
    flat = " ".join(subs["train"].format_help().split())
    for name in FIELD:
        values = choices(name)
        if values:
            assert all(v in flat for v in values), name
    for name in ("dataset", "scaling", "schedule", "output", "init", "grad", "optimizer"):
        assert choices(name), name  # every name-valued field with a fixed set lists it
    assert "--epochs N number of epochs (passes over the training split; default 40)" in flat
    assert "--schedule NAME learning-rate schedule (default cosine; lbfgs constant; one of" in flat
    for name, default in FIELD_DEFAULT.items():
        if default not in (None, True, False) and FIELD[name].kind != "bool":
            text = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
            assert f"default {text}" in flat, name


@pytest.mark.parametrize("command", ["train", "verify", "predict", "bench", "demo"])
def test_unknown_flags_are_named_under_their_subcommand(command, capsys):
    required = ["run-dir", "--data", "x.csv"] if command == "predict" else []
    assert main([command, *required, "--no-such-flag", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: jaxbp {command}: unrecognized arguments: --no-such-flag 1\n"
