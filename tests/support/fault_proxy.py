"""A TCP proxy on loopback that cuts the first N multipart uploads off half-way: the client
sees its connection drop mid-upload, as on a flaky network."""

from __future__ import annotations

import socket
import threading


class DroppingProxy:
    def __init__(self, target_port: int, drop_uploads: int = 1, cut_after: int = 4096) -> None:
        self.target_port, self.cut_after = target_port, cut_after
        self.drops_left = drop_uploads
        self.dropped = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        sent = 0
        cutting = False
        try:
            while data := client.recv(65536):
                if sent == 0 or b"HTTP/1.1\r\n" in data[:2048]:
                    with self._lock:
                        self.requests += 1
                        if b"multipart/form-data" in data and self.drops_left > 0:
                            self.drops_left -= 1
                            self.dropped += 1
                            cutting = True
                if cutting and sent + len(data) > self.cut_after:
                    upstream.sendall(data[: max(0, self.cut_after - sent)])
                    break  # the connection dies mid-upload
                upstream.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
