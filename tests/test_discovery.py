"""Stock nnU-Net finds our trainers in a new interpreter, with only the nnU-Net paths set."""
import os
import subprocess
import sys

from nnunet_ssl.integration import discovery

FIND = ("import os; from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
        "c = f('{name}'); print(c.__module__, c.__name__); print(os.environ['nnUNet_extTrainer'])")


def _fresh_python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=300)


def test_trainers_found_by_stock_lookup_after_install(tmp_path):
    result = _fresh_python(FIND.format(name="SSLInitTrainer"), nnUNet_raw=str(tmp_path),
                           nnUNet_preprocessed=str(tmp_path), nnUNet_results=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:] + "\n(editable install? run nnUNetv2_ssl_doctor --fix)"
    class_line, ext = result.stdout.splitlines()[-2:]  # nnU-Net prints its search before
    module, name = class_line.split()
    assert (module, name) == ("nnunet_ssl.integration.trainers.finetune", "SSLInitTrainer")  # canonical class
    assert ext == discovery.TRAINER_FOLDER


def test_user_value_of_ext_trainer_is_kept_first(tmp_path):
    user_dir = str(tmp_path / "my_trainers")
    os.mkdir(user_dir)
    result = _fresh_python(FIND.format(name="SSLScratchTrainer_tiny"), nnUNet_extTrainer=user_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == os.pathsep.join([user_dir, discovery.TRAINER_FOLDER])


def test_register_is_idempotent_and_appends():
    env = {"nnUNet_extTrainer": "/a" + os.pathsep + "/b"}
    discovery.register_trainer_folder(env)
    discovery.register_trainer_folder(env)
    assert env["nnUNet_extTrainer"].split(os.pathsep) == ["/a", "/b", discovery.TRAINER_FOLDER]


def test_doctor_hook_works_from_a_site_dir(tmp_path):
    """What `nnUNetv2_ssl_doctor --fix` writes for editable installs: a .pth that registers the folder."""
    hook = discovery.install_startup_hook(str(tmp_path))
    assert os.path.basename(hook) == discovery.PTH_NAME
    # -S: no site-packages processing, so only the hook written here can register the folder
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(discovery.__file__)))
    package_parent = os.path.dirname(package_parent)
    code = (f"import sys, os; sys.path.insert(0, {package_parent!r}); "
            f"print(os.environ.get('nnUNet_extTrainer')); import site; site.addsitedir({str(tmp_path)!r}); "
            f"print(os.environ['nnUNet_extTrainer'])")
    clean = {"PATH": os.environ.get("PATH", ""), "nnUNet_extTrainer": "/user"}
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=clean)
    before, after = result.stdout.strip().splitlines()
    assert before == "/user", result.stderr
    assert after.split(os.pathsep) == ["/user", discovery.TRAINER_FOLDER]



def test_startup_hook_sets_the_wait_policy_only_where_our_code_runs(tmp_path):
    """The hook runs before any import: in nnU-Net's train command given one of our trainers (and in our own
    commands) OMP_WAIT_POLICY is in the environment when torch loads libgomp, which reads it once, then; an
    explicit value is left alone; any other program, or nnU-Net with its own trainers, keeps OpenMP's default."""
    discovery.install_startup_hook(str(tmp_path))
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(discovery.__file__))))
    code = (f"import sys, os; sys.path.insert(0, {package_parent!r}); import site; "
            f"site.addsitedir({str(tmp_path)!r}); assert 'torch' not in sys.modules; "
            f"print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('nnUNet_extTrainer') is not None)")
    command = tmp_path / "nnUNetv2_train"  # a script of that name: the hook sees it as argv[0]
    command.write_text(code)
    for argv, user_value, expected in (
            ([str(command), "27", "2d", "0", "-tr", "SSLScratchTrainer_cpu4000it"], None, "PASSIVE"),
            ([str(command), "27", "2d", "0", "-tr", "nnUNetTrainer_cpu4000it"], None, "PASSIVE"),  # our stock arm
            ([str(command), "27", "2d", "0", "-tr", "SSLInitTrainer"], "ACTIVE", "ACTIVE"),
            ([str(command), "27", "2d", "0", "-tr", "nnUNetTrainer_250epochs"], None, "None"),  # nnU-Net's own
            ([str(command), "27", "2d", "0"], None, "None"),
            (["-c", code], None, "None")):  # any other program
        env = {"PATH": os.environ.get("PATH", ""), **({"OMP_WAIT_POLICY": user_value} if user_value else {})}
        result = subprocess.run([sys.executable, "-S", *argv], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [expected, "True"], (argv, result.stdout)  # trainers found in each


def test_an_older_hook_is_reported_as_outdated(tmp_path):
    assert not discovery.hook_outdated(str(tmp_path))  # none there: nothing to update
    (tmp_path / discovery.PTH_NAME).write_text("import importlib.util as _u; _u.find_spec('nnunet_ssl') and "
                                               "__import__('nnunet_ssl.integration.discovery').integration."
                                               "discovery.register_trainer_folder()\n")
    assert discovery.hook_outdated(str(tmp_path))
    discovery.install_startup_hook(str(tmp_path))
    assert not discovery.hook_outdated(str(tmp_path))


def test_console_scripts_set_the_wait_policy_before_torch_without_the_hook():
    """-S: no start-up hook; importing our CLI package alone sets it, torch not yet loaded."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(discovery.__file__))))
    code = (f"import sys, os; sys.path.insert(0, {package_parent!r}); import nnunet_ssl.cli; "
            f"print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))")
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                            env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "PASSIVE"]
