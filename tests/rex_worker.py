"""A small Remote Workers API host worker, for testing remote execution against BuildGrid.

BuildGrid serves the Remote Execution API (CAS, ActionCache, ByteStream, Execution) and
hands actions to bots over the Remote Workers API, but ships no bot. This one runs on
the host: it opens a bot session, and for each lease it is given

1. marks the lease ACTIVE;
2. fetches the Action, its Command and its input root from CAS (ByteStream) into a
   fresh directory, files executable exactly when the input tree says so;
3. runs the Command there with only the Command's own environment (nothing inherited),
   after creating the parent directories of its outputs;
4. uploads the outputs, stdout and stderr, and completes the lease with the ActionResult.

It needs BuildGrid's Python package (its generated protos and grpcio), so it runs with
the interpreter of BuildGrid's venv (`make` installs one in .venv-buildgrid):

    .venv-buildgrid/bin/python tests/rex_worker.py --server 127.0.0.1:PORT --workdir DIR
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from buildgrid._protos.google.bytestream import bytestream_pb2, bytestream_pb2_grpc
from buildgrid._protos.google.devtools.remoteworkers.v1test2 import bots_pb2, bots_pb2_grpc
from buildgrid._protos.google.rpc import code_pb2

CHUNK = 1 << 20


def digest_of(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


class Cas:
    """Reads and writes blobs through ByteStream (any size), skipping ones CAS has."""

    def __init__(self, channel: grpc.Channel, instance: str):
        self.instance = instance
        self.bytestream = bytestream_pb2_grpc.ByteStreamStub(channel)
        self.cas = re_grpc.ContentAddressableStorageStub(channel)

    def _prefix(self) -> str:
        return f"{self.instance}/" if self.instance else ""

    def read(self, digest: re_pb2.Digest) -> bytes:
        if digest.size_bytes == 0:
            return b""
        name = f"{self._prefix()}blobs/{digest.hash}/{digest.size_bytes}"
        return call(lambda req: b"".join(r.data for r in self.bytestream.Read(req)),
                    bytestream_pb2.ReadRequest(resource_name=name))

    def read_proto(self, digest: re_pb2.Digest, message):
        message.ParseFromString(self.read(digest))
        return message

    def write(self, data: bytes) -> re_pb2.Digest:
        digest = digest_of(data)
        if digest.size_bytes == 0:
            return digest
        missing = call(self.cas.FindMissingBlobs, re_pb2.FindMissingBlobsRequest(
            instance_name=self.instance, blob_digests=[digest]))
        if not missing.missing_blob_digests:
            return digest
        name = f"{self._prefix()}uploads/{uuid.uuid4()}/blobs/{digest.hash}/{digest.size_bytes}"

        def requests():
            offset = 0
            while True:
                piece = data[offset:offset + CHUNK]
                last = offset + len(piece) >= len(data)
                yield bytestream_pb2.WriteRequest(resource_name=name if offset == 0 else "",
                                                  write_offset=offset, data=piece, finish_write=last)
                offset += len(piece)
                if last:
                    return

        call(lambda _: self.bytestream.Write(requests()), None)
        return digest


def materialize(cas: Cas, digest: re_pb2.Digest, path: str) -> None:
    """Write the input tree `digest` below path."""
    os.makedirs(path, exist_ok=True)
    d = cas.read_proto(digest, re_pb2.Directory())
    for f in d.files:
        target = os.path.join(path, f.name)
        with open(target, "wb") as out:
            out.write(cas.read(f.digest))
        os.chmod(target, 0o755 if f.is_executable else 0o644)
    for s in d.symlinks:
        os.symlink(s.target, os.path.join(path, s.name))
    for sub in d.directories:
        materialize(cas, sub.digest, os.path.join(path, sub.name))


def _directory_proto(cas: Cas, path: str, children: list) -> re_pb2.Directory:
    d = re_pb2.Directory()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            d.symlinks.add(name=name, target=os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            sub = _directory_proto(cas, full, children)
            children.append(sub)
            d.directories.add(name=name, digest=digest_of(sub.SerializeToString(deterministic=True)))
        else:
            with open(full, "rb") as f:
                data = f.read()
            d.files.add(name=name, digest=cas.write(data), is_executable=bool(st.st_mode & 0o100))
    return d


def upload_outputs(cas: Cas, command: re_pb2.Command, root: str, result: re_pb2.ActionResult) -> None:
    paths = list(command.output_paths) or [*command.output_files, *command.output_directories]
    for rel in paths:
        full = os.path.join(root, rel)
        if os.path.islink(full):
            result.output_file_symlinks.add(path=rel, target=os.readlink(full))
        elif os.path.isdir(full):
            children: list = []
            tree = re_pb2.Tree(root=_directory_proto(cas, full, children), children=children)
            result.output_directories.add(path=rel, tree_digest=cas.write(tree.SerializeToString(deterministic=True)))
        elif os.path.isfile(full):
            with open(full, "rb") as f:
                data = f.read()
            result.output_files.add(path=rel, digest=cas.write(data),
                                    is_executable=bool(os.stat(full).st_mode & 0o100))


def execute(cas: Cas, action: re_pb2.Action, workdir: str) -> re_pb2.ActionResult:
    command = cas.read_proto(action.command_digest, re_pb2.Command())
    root = tempfile.mkdtemp(prefix="action-", dir=workdir)
    try:
        materialize(cas, action.input_root_digest, root)
        cwd = os.path.join(root, command.working_directory)
        for rel in [*command.output_paths, *command.output_files, *command.output_directories]:
            os.makedirs(os.path.dirname(os.path.join(cwd, rel)), exist_ok=True)
        env = {v.name: v.value for v in command.environment_variables}
        timeout = action.timeout.seconds or 900
        proc = subprocess.run(list(command.arguments), cwd=cwd, env=env, capture_output=True,
                              timeout=timeout)
        result = re_pb2.ActionResult(exit_code=proc.returncode)
        result.stdout_digest.CopyFrom(cas.write(proc.stdout))
        result.stderr_digest.CopyFrom(cas.write(proc.stderr))
        if proc.returncode == 0:
            upload_outputs(cas, command, cwd, result)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
             grpc.StatusCode.DEADLINE_EXCEEDED)


def call(rpc, request, **kw):
    """An RPC, tried again while the server is busy ("Concurrent RPC limit exceeded" when
    several clients poll at once) or briefly away: a worker that died there would leave
    every remote action waiting for ever."""
    delay = 0.1
    for _ in range(300):
        try:
            return rpc(request, **kw)
        except grpc.RpcError as e:
            if e.code() not in RETRYABLE:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    return rpc(request, **kw)


def run(server: str, instance: str, workdir: str, bot_id: str) -> None:
    channel = grpc.insecure_channel(server)
    bots = bots_pb2_grpc.BotsStub(channel)
    cas = Cas(channel, instance)
    session = call(bots.CreateBotSession, bots_pb2.CreateBotSessionRequest(
        parent=instance, bot_session=bots_pb2.BotSession(bot_id=bot_id, status=bots_pb2.BotStatus.OK)),
        wait_for_ready=True, timeout=120)  # the server may still be starting
    print(f"rex_worker: bot session {session.name}", flush=True)
    while True:
        for lease in session.leases:
            if lease.state == bots_pb2.LeaseState.PENDING:
                lease.state = bots_pb2.LeaseState.ACTIVE
        session = call(bots.UpdateBotSession,
                       bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=session))
        worked = False
        for lease in session.leases:
            if lease.state != bots_pb2.LeaseState.ACTIVE:
                continue
            action = re_pb2.Action()
            if lease.payload.Is(re_pb2.Action.DESCRIPTOR):
                lease.payload.Unpack(action)
            else:
                digest = re_pb2.Digest()
                lease.payload.Unpack(digest)
                cas.read_proto(digest, action)
            try:
                result = execute(cas, action, workdir)
                lease.status.code = code_pb2.OK
                lease.result.Pack(result)
            except Exception as e:  # report the failure to the client, keep serving
                lease.status.code = code_pb2.INTERNAL
                lease.status.message = f"{type(e).__name__}: {e}"
            lease.state = bots_pb2.LeaseState.COMPLETED
            worked = True
        if not worked and not session.leases:
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="host:port of the BuildGrid server")
    p.add_argument("--instance", default="", help="instance name (default: the empty one)")
    p.add_argument("--workdir", required=True, help="where action directories are made")
    p.add_argument("--bot-id", default=f"rex-worker-{os.getpid()}")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    try:
        run(args.server, args.instance, args.workdir, args.bot_id)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
