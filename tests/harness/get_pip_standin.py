"""Stand-in for pip's get-pip.py, the bootstrap script ansible-test puts pip into its venvs with.

ansible-test creates each sanity test's virtual environment without pip and
runs ``get-pip.py`` in it, which it downloads from ci-files.testing.ansible.com;
this machine cannot reach that host. tests/harness/sanity.sh installs this file
where ansible-test caches the download (~/.ansible/test/cache/get_pip_<version>.py).
It does what get-pip.py does, from the pip wheel that Python's own ensurepip
bundles instead of one embedded in the script: runs that pip to install the
pinned packages ansible-test names (``pip==<version>``, from the package
index). ansible-test passes --no-setuptools and --no-wheel (get-pip.py's own
options); nothing but the named packages is installed anyway.
"""

import glob
import os
import sys

import ensurepip

# tests/harness/sanity.sh replaces a cached bootstrap script only when it carries this marker (or is missing),
# so a real get-pip.py saved there by hand is kept.
STANDIN_MARKER = "fleetops.mcp get-pip stand-in"


def main():
    bundled = sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")))
    if not bundled:
        sys.exit("get-pip stand-in: this Python's ensurepip bundles no pip wheel")
    sys.path.insert(0, bundled[-1])
    from pip._internal.cli.main import main as pip_main

    args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
    sys.exit(pip_main(["install", "--quiet", *args]))


if __name__ == "__main__":
    main()
