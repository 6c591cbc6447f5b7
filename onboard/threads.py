"""The thread pools of the compute libraries, owned by the runtime: BLAS (and OpenMP) through
threadpoolctl, ONNX Runtime through its session options.

Why: a frame's work is many small products (the ImSPOC's 24 x 96 operators, a few small
convolutions), where pool threads cost more in wake-ups than they give. With the libraries'
defaults OpenBLAS's workers and ONNX Runtime's intra-op pool also spin after each call, and
the same ImSPOC frame took about twice the CPU time (issue 17). The ``onboard`` command line
pinned BLAS for itself (environment variables read when numpy loads); a Python caller of the
library got the defaults. Now the runtime (:func:`onboard.runtime.session.build_session`)
calls :func:`configure` with ``[run] threads``, once per process (again only when the count
changes), and every ONNX Runtime session the engines open takes :func:`session_options`.

``threads`` > 0: each pool has that many threads and ONNX Runtime's threads do not spin
(``session.intra_op.allow_spinning`` / ``inter_op`` = 0). 0: the libraries' own defaults (a
thread per core, spinning), as before. A BLAS library loaded after :func:`configure` (a
ground package's) is not limited by it.
"""

from __future__ import annotations

from typing import Any

#: ``[run] threads`` when nothing else says: one thread per pool (the frames are small).
DEFAULT_THREADS = 1
#: The environment variables BLAS and OpenMP read once, when they load.
ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_threads = DEFAULT_THREADS
_configured = False
_limits: Any = None  # threadpoolctl's handle on the limits it set, to undo them


def configure(threads: int) -> None:
    """Limit every loaded BLAS / OpenMP pool to ``threads`` (0: give them back their own
    defaults) and make ``threads`` the ONNX Runtime sessions' default from now on."""
    global _threads, _configured, _limits
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if _configured and threads == _threads:
        return
    from threadpoolctl import threadpool_limits

    if _limits is not None:
        _limits.restore_original_limits()
        _limits = None
    if threads:
        _limits = threadpool_limits(limits=threads)
    _threads, _configured = threads, True


def threads() -> int:
    """The pools' thread count in force (``DEFAULT_THREADS`` until :func:`configure`)."""
    return _threads


def session_options(ort: Any, intra_op_threads: int = 0, inter_op_threads: int = 0) -> Any:
    """``ort.SessionOptions`` with the owned pools: ``intra_op_threads`` / ``inter_op_threads``
    where given (> 0), else :func:`threads`; spinning off unless the pools are the library's
    defaults (``threads() == 0``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or _threads
    options.inter_op_num_threads = inter_op_threads or _threads
    if _threads:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def report() -> dict[str, Any]:
    """The pools as ``onboard info`` shows them: the setting, whether the runtime applied it in
    this process, every thread pool threadpoolctl finds loaded, and ONNX Runtime's options."""
    from threadpoolctl import threadpool_info

    pools = [{"api": p["user_api"], "library": p["internal_api"], "version": p.get("version"),
              "threads": p["num_threads"]} for p in threadpool_info()]
    return {"threads": _threads, "configured": _configured, "pools": pools,
            "onnxruntime": {"intra_op_threads": _threads, "inter_op_threads": _threads,
                            "spinning": _threads == 0}}
