"""Where the package's config/, launch/ and models/ live: a source checkout, a pip install or a colcon install."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_NAME = 'flow_rag_vla_ros'
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """Repo root in a checkout / editable install; the ament share directory after `colcon build`."""
    env = os.environ.get('FLOW_RAG_VLA_SHARE')
    if env:
        return Path(env)
    if (_SOURCE_ROOT / 'package.xml').exists():
        return _SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE_NAME))
    except Exception:  # ament index missing or package not registered
        return _SOURCE_ROOT


def config_path(name: str = 'stack.yaml') -> Path:
    return share_dir() / 'config' / name


def models_dir() -> Path:
    return share_dir() / 'models'
