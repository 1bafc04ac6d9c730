"""Launch: Plan → a running vLLM deployment (state under ``VLLM_OPS_STATE_DIR``).

    lifecycle.start(plan, opts, Topology(...)) / lifecycle.stop(deployment, store)
                                                                   the front door: every topology, companions
    launcher.launch(plan, LaunchOptions(...)) -> LaunchResult     one server: start, wait in stages, record
    locate.find_vllm(setting) / locate.installed_version(cmd)      which vLLM, which version
    logparse.StartupLog / parse_figures                            stages and figures of the log
    diagnosis.diagnose(log_text, Context) -> Diagnosis | None      why a start failed, the fix
    calibration.lookup(model_id, gpu_key, vllm_version, flags)     predicted-vs-actual records
    state.StateStore                                               deployments/, logs/, calibration.jsonl

Submodules are imported where used: ``calibration`` runs on the plan path and needs only the
standard library.
"""
