"""Trust: a crafted checkpoint runs nothing in any script; foreign pickles with config objects still load."""
import os
import pickle
import struct
import zipfile

import pytest
import torch

import merge
import probe
import tiny_distill as td


def text(s: str) -> bytes:
    """A pickle string opcode."""
    b = s.encode()
    if len(b) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(b)]) + b
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def call_global(module: str, name: str, *args: str) -> bytes:
    """A protocol-4 pickle that calls module.name(*args) when unpickled by a permissive reader (STACK_GLOBAL
    resolves dotted names, so `torch.serialization` + `os.system` reaches os.system)."""
    return (b"\x80\x04" + text(module) + text(name) + pickle.STACK_GLOBAL + pickle.MARK + b"".join(map(text, args))
            + pickle.TUPLE + pickle.REDUCE + pickle.STOP)


def crafted_files(folder) -> dict:
    """name -> path of a file whose payload would create folder/MARKER_<name>."""
    marker = str(folder / "MARKER_")
    hub = folder / "hub"
    hub.mkdir()
    (hub / "hubconf.py").write_text(f"open({marker + 'hub_local'!r}, 'w').close()\ndef x():\n    return 1\n")
    payloads = {
        "dotted_torch": call_global("torch.serialization", "os.system", f"touch {marker}dotted_torch"),
        "builtins_eval": call_global("builtins", "eval", f"open({marker + 'builtins_eval'!r}, 'w').close()"),
        "os_system": call_global("os", "system", f"touch {marker}os_system"),
        "torch_hub_load": call_global("torch.hub", "load", str(hub), "x"),
        "hub_local": call_global("torch.hub", "_load_local", str(hub), "x"),
        "numpy_global": call_global("numpy.testing._private.utils", "os.system", f"touch {marker}numpy_global"),
    }
    paths = {}
    for name, payload in payloads.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].write_bytes(payload)
    # a real zip checkpoint whose data.pkl is replaced by a payload
    paths["zip_nested"] = folder / "zip_nested.pt"
    torch.save({"w": torch.zeros(2)}, paths["zip_nested"])
    with zipfile.ZipFile(paths["zip_nested"]) as z:
        entries = [(info, z.read(info.filename)) for info in z.infolist()]
    payload = call_global("torch.serialization", "os.system", f"touch {marker}zip_nested")
    with zipfile.ZipFile(paths["zip_nested"], "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            z.writestr(info, payload if info.filename.endswith("data.pkl") else data)
    return paths


def refusal(call) -> str:
    """Run a script's main; it must exit non-zero with one line. -> that line."""
    with pytest.raises(SystemExit) as e:
        call()
    message = e.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted")
    return folder, crafted_files(folder)


def test_crafted_checkpoints_run_nothing_in_any_script(crafted, tiny_setup, tmp_path):
    """probe.py --model, tiny_distill.py --teacher_speech and merge.py --speech: no payload runs, one-line refusal."""
    folder, paths = crafted
    cfg, root = tiny_setup
    for name, path in paths.items():
        refusal(lambda: probe.main(["--model", str(path), "--task", "KS", "--data_dir", cfg.data_dir,
                                    "--results", str(tmp_path / "r.jsonl")]))
        refusal(lambda: probe.main(["--model", f"random:{path}", "--task", "KS", "--data_dir", cfg.data_dir]))
        refusal(lambda: td.main(["--domain", "speech", "--data_dir", cfg.data_dir, "--teacher_speech", str(path),
                                 "--init", str(tmp_path / "theta0.pt"), "--steps", "1"]))
        refusal(lambda: merge.main(["--speech", str(path), "--music", str(path), "--init", cfg.init,
                                    "--out", str(tmp_path / "m.pt")]))
    assert not [f for f in os.listdir(folder) if f.startswith("MARKER")]
    assert not os.path.exists(tmp_path / "m.pt") and not os.path.exists(tmp_path / "r.jsonl")


def test_a_refused_pickle_names_the_globals_it_made_inert(crafted):
    _, paths = crafted
    with pytest.raises(ValueError, match=r"torch\.serialization\.os\.system, read as inert data"):
        td.read_encoder(str(paths["dotted_torch"]))


def test_foreign_pickles_with_config_objects_still_load(tmp_path):
    """The inert reader keeps tensors (and a state dict's _metadata) and turns config objects into plain data, in
    the zip and the legacy format."""
    import argparse
    state = torch.nn.Linear(3, 2).state_dict()
    for legacy in (False, True):
        path = tmp_path / f"fairseq_{legacy}.pt"
        torch.save({"model": state, "args": argparse.Namespace(layers=3, name="x")}, path,
                   _use_new_zipfile_serialization=not legacy)
        obj, _ = td.read_file(str(path))
        assert torch.equal(obj["model"]["weight"], state["weight"]) and obj["model"]._metadata == state._metadata
        assert isinstance(obj["args"], td._Opaque) and obj["args"].state == {"layers": 3, "name": "x"}


def test_the_inert_reader_allows_nothing_beyond_tensor_rebuilding():
    """The allowlist is exact pairs; unknown globals become _Opaque, and BUILD on anything else is refused."""
    assert set(td.TORCH_REBUILD) == {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                                     ("collections", "OrderedDict")}
    import io
    reader = td._InertUnpickler(io.BytesIO(b""))
    assert reader.find_class("torch._utils", "_rebuild_tensor_v2.__globals__") is td._Opaque
    assert reader.find_class("torch", "_utils._rebuild_tensor_v2") is td._Opaque
    build_on_tensor = (b"\x80\x04" + text("torch._utils") + text("_rebuild_tensor_v2") + pickle.STACK_GLOBAL
                       + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP)
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        td._InertUnpickler(io.BytesIO(build_on_tensor)).load()


