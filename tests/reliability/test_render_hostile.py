"""Hostile names, paths and values in every rendered format: the same literal comes out (checked
by parsing each file back independently: the launch script is run with a fake `vllm`), or a
one-line BadInput (exit 2) — never a broken file, never a shell expansion."""
from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.reliability.conftest import count_input
from tests.reliability.strategies import FEW, hostile_text, long_text, with_control
from vllm_ops.errors import BadInput
from vllm_ops.hardware import parse_gpu_spec
from vllm_ops.models import load_model_spec
from vllm_ops.planning import plan as make_plan
from vllm_ops.render import render

MODEL = load_model_spec("Qwen/Qwen2.5-Coder-7B-Instruct", offline=True)
FAKE_VLLM = """#!/usr/bin/env python3
import json, os, sys
json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, open(os.environ["REL_OUT"], "w"))
"""


def _plan(served=None, env=None, extra=()):
    return make_plan(MODEL, parse_gpu_spec("1xL4"), served_name=served, env=env or {}, extra_args=tuple(extra))


def _undollar(x):
    return x.replace("$$", "$") if isinstance(x, str) else x


def _compose_values(text):
    doc = yaml.safe_load(text)
    svc = next(iter(doc["services"].values()))
    env = svc.get("environment") or {}
    env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
    return [_undollar(a) for a in svc["command"]], {k: _undollar(v) for k, v in env.items()}


def _k8s_values(text):
    for d in yaml.safe_load_all(text):
        if d and d.get("kind") == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            return ([_undollar(a) for a in c.get("args", [])],
                    {e["name"]: _undollar(e.get("value")) for e in c.get("env", []) if "value" in e})
    raise AssertionError("no Deployment")


def _systemd_words(s):
    """ExecStart=/Environment= words per systemd.syntax: "..." with C escapes, %% and $$ unescaped."""
    words, i = [], 0
    while i < len(s):
        if s[i] in " \t":
            i += 1
            continue
        w = []
        quote = s[i] if s[i] in "\"'" else None
        i += 1 if quote else 0
        while i < len(s) and (s[i] != quote if quote else s[i] not in " \t"):
            c = s[i]
            if c == "\\" and i + 1 < len(s):
                nxt = s[i + 1]
                w.append({"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "s": " "}.get(nxt, nxt))
                i += 2
                continue
            w.append(c)
            i += 1
        i += 1 if quote else 0
        words.append("".join(w).replace("%%", "%").replace("$$", "$"))
    return words


def _systemd_values(text):
    joined = text.replace("\\\n", " ")
    argv, env = [], {}
    for ln in joined.splitlines():
        if ln.startswith("ExecStart="):
            argv = _systemd_words(ln[len("ExecStart="):])
        elif ln.startswith("Environment="):
            (kv,) = _systemd_words(ln[len("Environment="):])
            k, _, v = kv.partition("=")
            env[k] = v
    return argv, env


def _command_values(text, tmp):
    """Run serve.sh for real, with a fake `vllm` first on PATH that records argv and env."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "vllm"
    fake.write_text(FAKE_VLLM)
    fake.chmod(0o755)
    script = tmp / "serve.sh"
    script.write_text(text)
    out = tmp / "out.json"
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "REL_OUT": str(out), "HOME": str(tmp),
           "VLLM_ENV_FILE": str(tmp / "none.env"), "VLLM_PYTHON": str(fake)}
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    rec = json.loads(out.read_text())
    return rec["argv"], rec["env"]


def _ray_values(text):
    joined = text.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if ln.startswith("exec vllm serve"))
    env = {}
    for ln in joined.splitlines():
        if ln.startswith("export "):
            (kv,) = shlex.split(ln[len("export "):])
            k, _, v = kv.partition("=")
            env[k] = v
    return shlex.split(line)[1:], env


def _check_all_formats(p, tmp, *, served=None, env_key=None, env_val=None, extra=()):
    for fmt in ("command", "compose", "systemd", "k8s", "ray"):
        art = render(p, fmt)
        files = {k: v for k, v in art.files.items() if not k.endswith(".env")}
        text = files[next(iter(files))]
        if fmt == "command":
            argv, env = _command_values(text, tmp)
        elif fmt == "compose":
            argv, env = _compose_values(text)
        elif fmt == "systemd":
            argv, env = _systemd_values(text)
        elif fmt == "k8s":
            argv, env = _k8s_values(text)
        else:
            argv, env = _ray_values(text)
        if served is not None:
            assert any(a == "--served-model-name" and b == served for a, b in zip(argv, argv[1:])), (fmt, argv)
        if env_key is not None:
            assert env.get(env_key) == env_val, (fmt, env.get(env_key), env_val)
        for a in extra:
            assert a in argv, (fmt, a, argv)


@FEW
@given(name=hostile_text)
def test_hostile_served_name_comes_out_literally(name, tmp_path_factory):
    count_input("render-hostile-name", 5)
    try:
        p = _plan(served=name)
        _check_all_formats(p, tmp_path_factory.mktemp("r"), served=name)
    except BadInput as exc:
        assert name.startswith("-") or "\n" not in str(exc)


@FEW
@given(value=st.one_of(hostile_text, long_text))
def test_hostile_env_value_comes_out_literally(value, tmp_path_factory):
    count_input("render-hostile-env", 5)
    p = _plan(env={"REL_VALUE": value})
    _check_all_formats(p, tmp_path_factory.mktemp("r"), env_key="REL_VALUE", env_val=value)


@FEW
@given(arg=hostile_text)
def test_hostile_extra_arg_comes_out_literally(arg, tmp_path_factory):
    count_input("render-hostile-arg", 5)
    arg = "x" + arg                                  # a value, not a flag
    p = _plan(extra=["--generation-config", arg])
    _check_all_formats(p, tmp_path_factory.mktemp("r"), extra=[arg])


@FEW
@given(bad=with_control, where=st.sampled_from(["served", "env", "arg"]))
def test_control_characters_are_refused(bad, where):
    count_input("render-control-char", 5)
    try:   # the plan's command is built by the same rule as every rendered argv: it may refuse first
        p = _plan(served=bad if where == "served" else None, env={"REL": bad} if where == "env" else None,
                  extra=["--generation-config", "x" + bad] if where == "arg" else ())
    except BadInput as exc:
        assert where != "env" and "\n" not in exc.one_line()
        return
    for fmt in ("command", "compose", "systemd", "k8s", "ray"):
        with pytest.raises(BadInput) as ei:
            render(p, fmt)
        assert "\n" not in ei.value.one_line()


HOSTILE_DIRS = ["m $(touch PWNED)", "m `touch PWNED`", "m'q\"uote", "m#hash", "m%n%%", "m;rm -rf x", "m 日本 é",
                "m${HOME}", "m\\back", "m{{ x }}"]


@pytest.mark.parametrize("dirname", HOSTILE_DIRS)
def test_hostile_model_path_through_the_cli(dirname, tmp_path, run_cli, monkeypatch):
    from tests.support.testbed import make_tiny_model

    monkeypatch.chdir(tmp_path)
    src = tmp_path / "tiny"
    if not src.exists():
        make_tiny_model(src)
    d = tmp_path / dirname
    d.mkdir()
    (d / "config.json").write_text((src / "config.json").read_text())
    count_input("render-hostile-path", 5)
    rc, out, err = run_cli("render", "--model", str(d), "--profile", "cpu", "--format", "all", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    for rel, text in doc["contents"].items():
        if rel == "serve.sh":
            argv, _ = _command_values(text, tmp_path)
            assert str(d) in argv
        elif rel == "docker-compose.yml":
            assert any(str(d) in a for a in _compose_values(text)[0]) or str(d) in json.dumps(yaml.safe_load(text))
        elif rel.endswith(".service"):
            assert str(d) in _systemd_values(text)[0]
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("bad", ["m\nx", "m\rx", "-m"])
def test_model_path_that_cannot_be_rendered(bad, tmp_path, check_cli):
    d = tmp_path / bad
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 512, "vocab_size": 512,
        "max_position_embeddings": 2048}))
    for fmt in ("command", "compose", "systemd", "k8s"):
        check_cli("render", "--model", str(d) if not bad.startswith("-") else bad, "--profile", "cpu",
                  "--format", fmt, category="render-hostile-path", expect=(2,))


@pytest.mark.parametrize("fmt", ["compose", "k8s"])
def test_emoji_served_name_renders(fmt, tmp_path):
    count_input("render-hostile-name")
    name = "chat-\U0001F642"
    p = _plan(served=name)
    art = render(p, fmt)
    text = next(v for k, v in art.files.items() if not k.endswith(".env"))
    argv = (_compose_values if fmt == "compose" else _k8s_values)(text)[0]
    assert name in argv


def test_c1_control_in_served_name_is_bad_input():
    count_input("render-control-char")
    with pytest.raises(BadInput):      # the plan's command refuses it (one argv rule for plan and render)
        _plan(served="m\x85x")
    p = _plan()
    p.served_name = "m\x85x"              # a saved plan edited by hand
    for fmt in ("compose", "k8s"):
        with pytest.raises(BadInput):
            render(p, fmt)
