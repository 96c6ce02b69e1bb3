# SPDX-License-Identifier: GPL-2.0-or-later
"""HTTP(S) servers for the URL tests, on 127.0.0.1 only: Range and If-Range
on request, ETags, Basic auth, connections dropped after some bytes or
stalled. Shared by tests/cli/test_urls.py and
tests/integration/test_urls_daemon.py."""

import base64
import contextlib
import functools
import http.server
import os
import socket
import sys
import threading


class QuietSimpleHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Handler(http.server.SimpleHTTPRequestHandler):
    """GET with Range/If-Range when the server allows it, ETags, Basic auth,
    and on request: connections dropped after some bytes, or stalled."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        if srv.auth is not None:
            expected = "Basic " + base64.b64encode(srv.auth.encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401, "Unauthorized")
                self.send_header("WWW-Authenticate", 'Basic realm="images"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if srv.stall == "before-headers":
            srv.stalled.set()
            srv.release.wait()
            return
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        with srv.lock:
            srv.requests.append((self.path, wanted, if_range))
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404, "File not found")
            return
        st = os.stat(path)
        size = st.st_size
        etag = '"%x-%x"' % (st.st_mtime_ns, size)
        start, end, status = 0, size, 200
        if wanted and srv.ranges and (if_range is None or if_range == etag):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last) + 1, size) if last else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", etag)
        if srv.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()

        count = end - start
        with srv.lock:
            limit = srv.drop_after if start == 0 else srv.drop_ranged_after
            drop = srv.drops > 0 and count > limit
            if drop:
                srv.drops -= 1
                count = limit
        stall = srv.stall == "mid-body"
        if stall and srv.stalls is not None:
            with srv.lock:
                stall = srv.stalls > 0
                srv.stalls -= stall
        if stall:
            count = min(count, srv.stall_after)
        with open(path, "rb") as f:
            f.seek(start)
            while count > 0:
                data = f.read(min(count, 1024 * 1024))
                if not data:
                    break
                self.wfile.write(data)
                count -= len(data)
                with srv.lock:
                    srv.bytes_sent += len(data)
        self.wfile.flush()
        if stall:
            srv.stalled.set()
            srv.release.wait()
        if drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            if srv.after_drop is not None:
                srv.after_drop(path)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # bmapctl closing a connection it has read enough of is no error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def http_server(root, handler=Handler, context=None, **settings):
    srv = Server(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    defaults = dict(ranges=True, auth=None, drops=0, drop_after=0, drop_ranged_after=None,
                    stall=None, stall_after=100000, stalls=None, after_drop=None)
    defaults.update(settings)
    for key, value in defaults.items():
        setattr(srv, key, value)
    if srv.drop_ranged_after is None:
        srv.drop_ranged_after = srv.drop_after
    srv.lock = threading.Lock()
    srv.requests = []
    srv.bytes_sent = 0
    srv.stalled = threading.Event()
    srv.release = threading.Event()
    scheme = "http"
    if context is not None:
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"{scheme}://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join()
