"""Print the version and location of each named distribution, and fail unless each named module imports from SITE.

    python scripts/installed_versions.py SITE --dists torch,transformers,... --modules transformers,linearize,...

Used by the device scripts (device_bootstrap.sh, gpu_speed.sh) after they install wheels into SITE, so a run says
what it ran on and stops when a package came from elsewhere."""

import argparse
import importlib
import importlib.metadata as md
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("site")
parser.add_argument("--dists", required=True, help="comma-separated distribution names")
parser.add_argument("--modules", required=True, help="comma-separated modules that must import from SITE")
parser.add_argument("--prefix", default="", help="put before the error line")
args = parser.parse_args()
site = os.path.realpath(args.site)
modules = [importlib.import_module(m) for m in args.modules.split(",")]
for name in args.dists.split(","):
    try:
        dist = md.distribution(name)
        where = "site" if os.path.realpath(str(dist.locate_file(""))) == site else str(dist.locate_file(""))
        print(f"  {name:24s} {dist.version:14s} {where}")
    except md.PackageNotFoundError:
        print(f"  {name:24s} MISSING")
import torch  # noqa: E402  (after the listing: a broken torch still shows what was installed)

print("  cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
bad = [m.__name__ for m in modules if not os.path.realpath(m.__file__).startswith(site + os.sep)]
sys.exit(f"{args.prefix}ERROR: not imported from {site}: {bad}" if bad else 0)
