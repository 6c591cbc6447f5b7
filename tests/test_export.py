"""Export chain: PyTorch -> ONNX (checker, parity) -> INT8 Q/DQ and FP16 -> TensorRT, and
the reconstruction operator as a graph.

Tolerances: ONNX Runtime and PyTorch run the same float32 convolutions in other orders, so
outputs of unit order agree to a few float32 ulps per layer; 1e-4 absolute leaves two
orders of margin over the ~1e-6 seen and still fails on any real export error (a wrong
padding or layout gives errors of order 0.1-1). INT8 and FP16 are compared with fp32 at
the quantisation step they imply (below).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the export extra (pip install 'onboard[export]')")
onnx = pytest.importorskip("onnx", reason="the export extra (pip install 'onboard[export]')")

from export import quantize, reconstruction_graph, tensorrt_build  # noqa: E402
from export.models import SPREAD_RANGE, EigenRefiner, ResidueNet  # noqa: E402
from export.onnx_export import IR_VERSION, OPSET, export_onnx  # noqa: E402
from export.parity import output_parity  # noqa: E402
from export.train import mixed_crops  # noqa: E402
from onboard.formats.types import TILLAGE_THRESHOLDS, tillage_class  # noqa: E402
from onboard.stages.confidence import interval_confidence  # noqa: E402

# The legacy TorchScript exporter warned of its deprecation on every export: any
# deprecation warning in these tests is an error.
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

PARITY_ATOL = 1e-4


def _refiner(seed: int = 0) -> EigenRefiner:
    torch.manual_seed(seed)
    model = EigenRefiner(width=8, depth=4)
    torch.nn.init.normal_(model.body[-1].weight, std=0.3)  # not the zero start
    return model.eval()


def _run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_refiner_onnx_checker_and_parity_at_other_sizes(tmp_path):
    model = _refiner()
    path = export_onnx(model, torch.randn(2, 2, 32, 32), tmp_path / "d.onnx", "eigenimages",
                       ["correction"], {0: "k", 2: "H", 3: "W"})
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", OPSET)]
    assert m.ir_version == IR_VERSION

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert [dims(v) for v in m.graph.input] == [["k", 2, "H", "W"]]
    assert [dims(v) for v in m.graph.output] == [["k", 1, "H", "W"]]
    assert [n.op_type for n in m.graph.node] == ["Conv", "Relu"] * 3 + ["Conv"]
    rng = np.random.default_rng(0)
    # exported from one eigen-image, k stays dynamic
    one = export_onnx(model, torch.randn(1, 2, 32, 32), tmp_path / "d1.onnx", "eigenimages",
                      ["correction"], {0: "k", 2: "H", 3: "W"})
    for p in (path, one):
        for shape in [(5, 2, 40, 56), (1, 2, 17, 9)]:  # dynamic k, H, W, odd sizes
            x = rng.standard_normal(shape).astype(np.float32)
            got = _run(p, {"eigenimages": x})[0]
            with torch.no_grad():
                want = model(torch.from_numpy(x)).numpy()
            assert got.shape == (shape[0], 1, *shape[2:])
            np.testing.assert_allclose(got, want, atol=PARITY_ATOL, rtol=0)


def test_residue_net_outputs_simplex_and_parity(tmp_path):
    torch.manual_seed(1)
    net = ResidueNet(bands=24, width=16).eval()
    path = export_onnx(net, torch.randn(1, 24, 16, 16), tmp_path / "r.onnx", "cube",
                       ["probabilities", "fractions"], {2: "H", 3: "W"})
    graph = onnx.load(str(path)).graph
    # plain operators of the default domain, each one TensorRT 10's parser and the quantiser take
    assert {n.domain for n in graph.node} == {""}
    assert {n.op_type for n in graph.node} == {"Mul", "ReduceSum", "Abs", "Div", "Add", "Log",
                                               "Concat", "Sub", "Conv", "Relu", "Pad", "Softmax",
                                               "Sigmoid", "Slice"}  # the class interval masses
    x = np.random.default_rng(1).standard_normal((1, 24, 30, 22)).astype(np.float32) * 3
    prob, frac = _run(path, {"cube": x})
    with torch.no_grad():
        want = [t.numpy() for t in net(torch.from_numpy(x))]
    for got, w in zip((prob, frac), want, strict=True):
        assert got.shape == (1, 3, 30, 22)
        np.testing.assert_allclose(got, w, atol=PARITY_ATOL, rtol=0)
        assert (got >= 0).all()
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_residue_probabilities_are_the_gaussian_interval_masses_of_the_fraction():
    """The class probabilities are the masses of the tillage intervals under N(f, s^2), f the
    residue fraction the net gives and s its spread: with the spread head at a known value
    they match the classical stage's rule (exact normal, within the logistic approximation's
    0.01), and with a tiny spread the most probable class is the fraction's own class."""
    torch.manual_seed(4)
    net = ResidueNet(bands=24, width=16).eval()
    x = torch.from_numpy(np.random.default_rng(4).uniform(0.05, 0.5, (1, 24, 20, 20)).astype(np.float32))
    lo, hi = SPREAD_RANGE
    with torch.no_grad():
        net.spread.weight.zero_()
        net.spread.bias.fill_(0.0)  # spread (lo + hi) / 2 everywhere
        prob, frac = (t.numpy()[0] for t in net(x))
        sigma = (lo + hi) / 2
        f = frac[0]
        k = tillage_class(f)
        want = interval_confidence(f, sigma)
        got = np.take_along_axis(prob, k[None].astype(np.int64), axis=0)[0]
        np.testing.assert_allclose(got, want, atol=0.01)
        net.spread.bias.fill_(-30.0)  # spread lo
        prob, frac = (t.numpy()[0] for t in net(x))
    away = np.min(np.abs(frac[0][None] - np.array(TILLAGE_THRESHOLDS)[:, None, None]), axis=0) > 2 * lo
    assert away.sum() > 100
    np.testing.assert_array_equal(prob.argmax(0)[away], tillage_class(frac[0])[away])


def test_mixed_crops_are_linear_mixtures_with_their_fractions():
    """A mixed training crop is ``(1 - a) x1 + a x2`` for the cube and the fractions alike,
    and a pixel invalid in either crop is invalid in the mixture."""
    rng = np.random.default_rng(5)
    fr = rng.dirichlet(np.ones(3), size=(6, 16, 16)).transpose(0, 3, 1, 2).astype(np.float32)
    till = tillage_class(fr[:, 0]).astype(np.float32)[:, None]
    till[:, :, :4, :4] = -1
    cube = np.concatenate([fr, 2 * fr], axis=1)  # a cube that is a linear image of its fractions
    x, f, valid = mixed_crops(rng, [cube, fr, till], 64, 8)
    np.testing.assert_allclose(x[:, :3], f, atol=1e-6)
    np.testing.assert_allclose(x[:, 3:], 2 * f, atol=1e-6)
    np.testing.assert_allclose(f.sum(axis=1), 1.0, atol=1e-5)
    unmixed = [any(np.array_equal(f[i], fr[j, :, r:r + 8, c:c + 8]) or
                   np.array_equal(f[i], fr[j, :, r:r + 8, c:c + 8][:, ::-1]) or
                   np.array_equal(f[i], fr[j, :, r:r + 8, c:c + 8][:, :, ::-1]) or
                   np.array_equal(f[i], fr[j, :, r:r + 8, c:c + 8][:, ::-1, ::-1])
                   for j in range(6) for r in range(9) for c in range(9)) for i in range(64)]
    assert 10 < sum(unmixed) < 54  # about half of the crops mixed
    assert valid.min() == 0 and valid.max() == 1


def test_export_warns_of_no_deprecation(tmp_path):
    """Nothing deprecated is used on the way (the TorchScript exporter was: DeprecationWarning)."""
    net = ResidueNet(bands=24, width=16).eval()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        export_onnx(net, torch.rand(1, 24, 16, 16), tmp_path / "r.onnx", "cube",
                    ["probabilities", "fractions"], {2: "H", 3: "W"})
        export_onnx(_refiner(), torch.randn(2, 2, 16, 16), tmp_path / "d.onnx", "eigenimages",
                    ["correction"], {0: "k", 2: "H", 3: "W"})
    stale = [f"{w.category.__name__}: {w.message}" for w in seen
             if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))]
    assert not stale


def test_export_logs_no_optimisation_pass(tmp_path, caplog):
    """The exporter's graph libraries log every pass at INFO; ``onboard`` logs at INFO."""
    with caplog.at_level("INFO"):
        export_onnx(_refiner(), torch.randn(2, 2, 16, 16), tmp_path / "d.onnx", "eigenimages",
                    ["correction"], {0: "k", 2: "H", 3: "W"})
    assert [r.name for r in caplog.records if r.name.startswith(("onnx_ir", "onnxscript"))] == []


_EXPORT_IN_CHILD = """
import sys, torch
from export.models import ResidueNet
from export.onnx_export import export_onnx
net = ResidueNet(bands=24, width=16, usable=[b % 7 != 3 for b in range(24)])
net.load_state_dict(torch.load(sys.argv[1]))
export_onnx(net, torch.rand(1, 24, 16, 16), sys.argv[2], "cube", ["probabilities", "fractions"],
            {2: "H", 3: "W"})
"""


def test_same_weights_export_to_the_same_bytes(tmp_path):
    """Bit-for-bit bundle rebuilds: the same weights give the same file, from another process
    (another hash seed) and another example input, and the file names no path of the checkout
    (the exporter's stack-trace annotations did)."""
    torch.manual_seed(4)
    net = ResidueNet(bands=24, width=16, usable=[b % 7 != 3 for b in range(24)]).eval()
    net.set_standardisation(torch.rand(2, 24, 8, 8))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    here = export_onnx(net, torch.rand(1, 24, 20, 12), tmp_path / "a.onnx", "cube",
                       ["probabilities", "fractions"], {2: "H", 3: "W"}).read_bytes()
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", _EXPORT_IN_CHILD, str(tmp_path / "w.pt"),
                    str(tmp_path / "b.onnx")], check=True, env=env, capture_output=True)
    assert (tmp_path / "b.onnx").read_bytes() == here
    assert b"models.py" not in here and b"stack_trace" not in here
    torch.nn.init.normal_(net.fractions.weight)  # and other weights give another file
    other = export_onnx(net, torch.rand(1, 24, 16, 16), tmp_path / "c.onnx", "cube",
                        ["probabilities", "fractions"], {2: "H", 3: "W"}).read_bytes()
    assert other != here


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    model = _refiner(2)
    fp32 = export_onnx(model, torch.randn(4, 2, 32, 32), d / "m.fp32.onnx", "eigenimages",
                       ["correction"], {0: "k", 2: "H", 3: "W"})
    rng = np.random.default_rng(2)
    feeds = [{"eigenimages": rng.standard_normal((4, 2, 32, 32)).astype(np.float32)}
             for _ in range(6)]
    int8 = quantize.quantize_int8(fp32, d / "m.int8.onnx", feeds)
    fp16 = quantize.convert_fp16(fp32, d / "m.fp16.onnx")
    return fp32, int8, fp16, feeds


def test_int8_is_qdq_symmetric_per_channel(exported):
    fp32, int8, _, feeds = exported
    summary = quantize.qdq_summary(int8)
    assert summary["quantize_linear"] > 0 and summary["dequantize_linear"] > 0
    assert summary["zero_points_all_zero"], "TensorRT needs zero points of 0"
    model = onnx.load(str(int8))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    edges = quantize.edge_convs(onnx.load(str(fp32)))
    assert len(convs) == 4 and len(edges) == 2  # first and last stay float
    producers = {o: n for n in model.graph.node for o in n.output}
    quantised = [c for c in convs if c.input[1] in producers]
    assert len(quantised) == 2 and not {c.name for c in quantised} & set(edges)
    for conv in quantised:  # weights through a per-channel DequantizeLinear, int8
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        scale = inits[dq.input[1]]
        weight = inits[dq.input[0]]
        assert scale.shape == (weight.shape[0],) and weight.dtype == np.int8
        assert producers[conv.input[0]].op_type == "DequantizeLinear"  # and activations
    assert not any(n.op_type in ("QLinearConv", "ConvInteger") for n in model.graph.node)


def test_int8_quantises_convolutions_only(tmp_path):
    """The residue classifier's input normalisation (spectrum / mean, log) and its softmax
    outputs stay float: every quantised tensor is a convolution's input or output."""
    net = ResidueNet(bands=24, width=16).eval()
    path = export_onnx(net, torch.rand(1, 24, 32, 32), tmp_path / "r.onnx", "cube",
                       ["probabilities", "fractions"], {2: "H", 3: "W"})
    rng = np.random.default_rng(3)
    feeds = [{"cube": rng.uniform(0.05, 0.5, (1, 24, 32, 32)).astype(np.float32)} for _ in range(3)]
    model = onnx.load(str(quantize.quantize_int8(path, tmp_path / "r.int8.onnx", feeds)))
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    producers = {o: n for n in model.graph.node for o in n.output}
    for q in qs:
        made_by_conv = q.input[0] in producers and producers[q.input[0]].op_type == "Conv"
        for dq in consumers[q.output[0]]:
            assert dq.op_type == "DequantizeLinear"
            read_by = {c.op_type for c in consumers[dq.output[0]]}
            assert made_by_conv or read_by == {"Conv"}, q.input[0]
    assert producers["fractions"].op_type == "Softmax"
    assert producers["probabilities"].op_type == "Concat"  # interval masses, in float


def test_int8_and_fp16_close_to_fp32(exported):
    fp32, int8, fp16, feeds = exported
    ref = output_parity(lambda f: _run(fp32, f), fp32, feeds[:2])
    assert ref["max_abs_error"] == 0.0
    # An untrained network with random weights on random inputs is a hard case for 8 bits
    # (its output is a small difference of large activations): about 0.97 correlation and a
    # relative RMS error about 0.24 are what ONNX Runtime gives; a wrong scale, zero point or
    # channel axis decorrelates the output (correlation near 0, relative error near 1).
    # The trained models lose far less (the bundle manifest records their accuracy).
    x = feeds[0]["eigenimages"]
    a, b = _run(fp32, {"eigenimages": x})[0], _run(int8, {"eigenimages": x})[0]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.4 * a.std()
    scale = float(np.abs(a).max())
    h = output_parity(lambda f: _run(fp32, f), fp16, feeds[:2])
    assert h["max_abs_error"] < 2e-3 * max(scale, 1.0)  # 11-bit mantissa
    sess = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"  # the interface stays float32


def test_reconstruction_graph_matches_the_stage(tmp_path):
    from onboard.physics.imspoc import default_instrument
    from onboard.sources.simulated import calibrate_imspoc
    from onboard.stages import radiometric
    from onboard.stages.reconstruct import Reconstructor

    inst = default_instrument()
    cal = calibrate_imspoc(inst, n_bands=24)
    grid = inst.scene_grid()
    h, w = inst.thumb_shape
    lam = (grid - grid[0]) / np.ptp(grid)
    yy = np.linspace(0, 1, h)[:, None, None]
    refl = (0.2 + 0.2 * lam[None, None] * yy + 0.1 * (np.arange(w)[None, :, None] > w // 2))
    refl = refl.transpose(2, 0, 1)  # (B, h, w): a gradient and a parcel border
    frame = radiometric.correct(inst.frame(refl, grid, np.random.default_rng(0)),
                                cal.radiometric, inst.detector_spec.max_dn - 1)
    cube, lam_gcv = Reconstructor(cal).reconstruct(frame)
    path = reconstruction_graph.build_graph(cal, lam_gcv, frame.exposure_s, tmp_path / "r.onnx")
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", OPSET)]
    assert m.ir_version == IR_VERSION
    p = reconstruction_graph.parity(cal, path, frame, lam_gcv)
    # float32 products of 96 terms of DN ~1e3 by weights ~1e-4: rounding ~1e-6 relative
    assert p["max_rel_error"] < 1e-5, p
    got = _run(path, {"thumbnails": cal.layout.extract(frame.pixels).astype(np.float32)})[0]
    np.testing.assert_allclose(got, cube.data, atol=1e-5 * np.abs(cube.data).max())


def test_tensorrt_older_than_10_is_refused_by_name():
    """The bundle's ONNX is opset 18: TensorRT 8.6 (JetPack 6.0) cannot parse it, and says so
    before any parsing; TensorRT 10 (JetPack 6.1 / 6.2) is taken."""
    with pytest.raises(tensorrt_build.PlanBuildError, match=r"8\.6\.2.*TensorRT >= 10.*JetPack >= 6\.1"):
        tensorrt_build.check_version("8.6.2")
    tensorrt_build.check_version("10.3.0")
    tensorrt_build.check_version("11.0.1")


@pytest.mark.tensorrt
def test_tensorrt_plan_matches_onnxruntime(exported, tmp_path):
    reason = tensorrt_build.unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT plan not built here: {reason}")
    from onboard.engines.tensorrt_engine import PlanKey, TensorRTEngine
    from onboard.formats.bundle import TensorSpec
    from onboard.formats.calfile import file_sha256

    fp32, _, _, feeds = exported
    info = tensorrt_build.build_plan(fp32, tmp_path / "m.plan", "fp32",
                                     {"eigenimages": ((1, 2, 16, 16), (4, 2, 32, 32),
                                                      (8, 2, 128, 128))},
                                     timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").is_file()
    spec_in = (TensorSpec("eigenimages", ("k", 2, "H", "W"), "float32"),)
    spec_out = (TensorSpec("correction", ("k", 1, "H", "W"), "float32"),)
    key = PlanKey(file_sha256(fp32), info["tensorrt_version"], info["compute_capability"], "fp32")
    with TensorRTEngine(tmp_path / "m.plan", spec_in, spec_out, built_for=key,
                        model_sha256=key.model_sha256) as engine:
        got = engine.run(feeds[0])["correction"]
    np.testing.assert_allclose(got, _run(fp32, feeds[0])[0], atol=1e-3)
