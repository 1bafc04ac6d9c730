"""Launch: Plan → a running vLLM deployment (state under ``VLLM_OPS_STATE_DIR``).

    launcher.launch(plan, LaunchOptions(...)) -> LaunchResult     start, wait in stages, record
    launcher.stop(deployment, store)                               stop the whole process group
    locate.find_vllm(setting) / locate.installed_version(cmd)      which vLLM, which version
    logparse.StartupLog / parse_figures                            stages and figures of the log
    diagnosis.diagnose(log_text, Context) -> Diagnosis | None      why a start failed, the fix
    calibration.lookup(model_id, gpu_key, vllm_version, flags)     predicted-vs-actual records
    state.StateStore                                               deployments/, logs/, calibration.jsonl

Submodules are imported where used: ``calibration`` runs on the plan path and needs only the
standard library.
"""
