"""Device and CPU-thread setup (integration/device.py): pure environment decisions."""


def test_wait_policy_default_is_passive_and_keeps_a_users_choice():
    from nnunet_ssl.integration.device import wait_policy_default
    env = {}
    assert wait_policy_default(env) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}, {"KMP_BLOCKTIME": "0"}):
        env = dict(chosen)
        assert wait_policy_default(env) is None and env == chosen


def test_cpu_worker_env_keeps_a_users_values():
    from nnunet_ssl.integration.device import cpu_worker_env
    assert cpu_worker_env("cuda", {}) == {}
    assert cpu_worker_env("cpu", {}) == {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}
    assert cpu_worker_env("cpu", {"nnUNet_n_proc_DA": "3"})["nnUNet_n_proc_DA"] == "3"


def test_shared_cores_env_splits_the_cores_unless_the_user_chose():
    import os

    from nnunet_ssl.integration.device import shared_cores_env
    cores = len(os.sched_getaffinity(0))
    assert shared_cores_env("cpu", 2, {}) == {"OMP_NUM_THREADS": str(max(1, cores // 2))}
    assert shared_cores_env("cpu", 4 * cores, {}) == {"OMP_NUM_THREADS": "1"}  # never 0 threads
    assert shared_cores_env("cpu", 2, {"OMP_NUM_THREADS": "3"}) == {}
    assert shared_cores_env("cuda", 2, {}) == {}
