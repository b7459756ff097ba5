"""The one view of a container that every recipe and command sees, whatever cloud it runs on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RuntimeContext:
    """Normalised container contract.

    `inputs` maps each input name to a local path (a file or a directory of files). `model_dir`,
    `checkpoint_dir` and `log_dir` are local, writable directories. `node_rank`/`num_nodes`/
    `processes_per_node` describe the cluster; `master_addr`/`master_port` is where rank 0 listens.
    `job` is the runtime job config (the spec's train/command/checkpoint sections as plain JSON).
    """

    provider: str
    job_name: str
    inputs: dict[str, Path]
    model_dir: Path
    checkpoint_dir: Path
    log_dir: Path
    code_dir: Path | None
    node_rank: int
    num_nodes: int
    processes_per_node: int
    master_addr: str
    master_port: int
    hosts: tuple[str, ...]
    job: dict[str, Any] = field(default_factory=dict)
    failure_file: Path | None = None

    @classmethod
    def single_process(cls, work_dir: Path, inputs: dict[str, Path], job_name: str = "local",
                       provider: str = "bare") -> "RuntimeContext":
        """One process on this machine, with model/checkpoints/logs under `work_dir` (to run a recipe in-process)."""
        return cls(
            provider=provider, job_name=job_name, inputs=dict(inputs), model_dir=work_dir / "model",
            checkpoint_dir=work_dir / "checkpoints", log_dir=work_dir / "logs", code_dir=None, node_rank=0,
            num_nodes=1, processes_per_node=1, master_addr="127.0.0.1", master_port=29500, hosts=("localhost",),
        )

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.processes_per_node

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()} | {
            "inputs": {k: str(v) for k, v in self.inputs.items()},
            "hosts": list(self.hosts),
        }
