"""Stand-ins for `sbatch`, `srun` and `scontrol` that run a Slurm job array's tasks on this machine.

datatrove's `SlurmPipelineExecutor` writes a real sbatch script and submits it; the stand-in `sbatch` runs every
task of the array right away, one after the other (so chained jobs run in submission order, which is dependency
order), appends their output to `$FAKE_SLURM_LOG`, and answers like sbatch. Used by the `fake_slurm` fixture.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path


FAKE_SBATCH = """#!/bin/bash
# runs every task of the job array here, one after the other; like sbatch, never fails because a job failed
script="${@: -1}"
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$script")
for task in $(seq 0 "${last:-0}"); do
  SLURM_ARRAY_TASK_ID=$task SLURM_NODELIST=localhost bash "$script" >> "$FAKE_SLURM_LOG" 2>&1 || echo "task $task failed" >> "$FAKE_SLURM_LOG"
done
echo "Submitted batch job 4242"
"""
FAKE_SRUN = """#!/bin/bash
while [[ "$1" == -* ]]; do if [[ "$1" == "-n" ]]; then shift; fi; shift; done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/bash
echo localhost
"""


def install(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Write the stand-ins under `tmp_path`; returns the environment variables that put them first, and the log."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "slurm.log"
    # launch_pickled_pipeline and merge_stats are datatrove's console scripts, next to this python
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {"PATH": path, "FAKE_SLURM_LOG": str(log)}, log
