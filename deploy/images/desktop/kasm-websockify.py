#!/usr/bin/python3
"""Debian's websockify (0.10) with KasmVNC's two users, for the deskhub/desktop image.

KasmVNC images accept two users with the same password ($VNC_PW): kasm_user, the owner, and
kasm_viewer, who may only watch. This keeps that contract with websockify's own server:

- every request, file or WebSocket, needs HTTP Basic auth as one of the two users (anything
  else: 401 with WWW-Authenticate, as before);
- a WebSocket goes to the read-write x11vnc (--owner-port) for kasm_user and to the view-only
  x11vnc (--viewer-port) for kasm_viewer, chosen per request from the user it authenticated;
- /api/... is KasmVNC's owner API: 403 for kasm_viewer; for kasm_user a JSON placeholder (this
  image has no real API behind it);
- everything else is the web folder, served to both users alike (Kasm's web folder includes
  the owner's Downloads, and so does ours).

websockify forks a process per TCP connection; the user is kept on the request handler and reset
before each request of a kept-alive connection, never on the server object, so nothing one
request authenticated can reach another. The password is read from $VNC_PW, not the command
line, so it does not show in the process list.
"""
import argparse
import base64
import binascii
import hmac
import json
import logging
import os
import posixpath
import socket
import sys
from http.server import SimpleHTTPRequestHandler
from urllib.parse import unquote

from websockify.auth_plugins import AuthenticationError
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy, select_ssl_version

OWNER = 'kasm_user'
VIEWER = 'kasm_viewer'
# A refused request ends its connection; saying so keeps clients from reusing it.
UNAUTHORIZED = {'WWW-Authenticate': 'Basic realm="Websockify"', 'Content-Length': '0', 'Connection': 'close'}


def basic_user(header, password):
    """The user a Basic Authorization header proves (kasm_user or kasm_viewer), else None.
    password is bytes; the comparison takes the same time wherever the first difference is."""
    if not header or not header.startswith('Basic '):
        return None
    try:
        user, sep, given = base64.b64decode(header[6:].strip(), validate=True).partition(b':')
    except (binascii.Error, ValueError):
        return None
    name = user.decode('latin-1')
    if not sep or name not in (OWNER, VIEWER):
        return None
    return name if hmac.compare_digest(given, password) else None


def is_api(path):
    """True for KasmVNC's owner API: /api or anything under it, however the path is spelled."""
    # Read like the web server reads it (SimpleHTTPRequestHandler.translate_path): not with
    # urlsplit, which takes '//api/x' for a host; and normpath keeps a leading '//'.
    path = path.split('?', 1)[0].split('#', 1)[0]
    clean = '/' + posixpath.normpath(unquote(path)).lstrip('/')
    return clean == '/api' or clean.startswith('/api/')


class KasmRequestHandler(ProxyRequestHandler):
    # Set by authenticate() for the request being handled; None until then.
    kasm_user = None

    def handle_one_request(self):
        self.kasm_user = None
        super().handle_one_request()

    def authenticate(self):
        """Checks this request's credentials; on failure answers 401 and returns False."""
        self.kasm_user = basic_user(self.headers.get('Authorization'), self.server.kasm_password)
        if self.kasm_user is None:
            self.send_auth_error(AuthenticationError(response_code=401, response_headers=UNAUTHORIZED))
            return False
        return True

    # websockify calls these two before accepting an upgrade; handle_upgrade() below has already
    # authenticated, so they only refuse a request that somehow has no user.
    def validate_connection(self):
        pass

    def auth_connection(self):
        if self.kasm_user is None:
            raise AuthenticationError(response_code=401, response_headers=UNAUTHORIZED)

    def handle_upgrade(self):
        if self.authenticate():
            super().handle_upgrade()

    def do_GET(self):
        self.serve(SimpleHTTPRequestHandler.do_GET)

    def do_HEAD(self):
        self.serve(SimpleHTTPRequestHandler.do_HEAD)

    def serve(self, static):
        if not self.authenticate():
            return
        if is_api(self.path):
            self.owner_api()
        else:
            static(self)

    def owner_api(self):
        if self.kasm_user == OWNER:
            status, body = 200, {'user': self.kasm_user, 'api': self.path.split('?', 1)[0],
                                 'note': 'placeholder: this image has no KasmVNC API behind it'}
        else:
            status, body = 403, {'user': self.kasm_user, 'error': 'the API is for the owner only'}
        data = (json.dumps(body) + '\n').encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def new_websocket_client(self):
        port = self.server.vnc_ports[self.kasm_user]
        self.log_message('%s: connecting to 127.0.0.1:%s', self.kasm_user, port)
        try:
            target = socket.create_connection(('127.0.0.1', port))
        except OSError as e:
            self.log_message('failed to connect to 127.0.0.1:%s: %s', port, e)
            raise self.CClose(1011, 'Failed to connect to downstream server')
        self.request.setsockopt(socket.SOL_TCP, socket.TCP_NODELAY, 1)
        target.setsockopt(socket.SOL_TCP, socket.TCP_NODELAY, 1)
        try:
            self.do_proxy(target)
        finally:
            try:
                target.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            target.close()


class KasmProxy(WebSocketProxy):
    def __init__(self, password, owner_port, viewer_port, **kwargs):
        self.kasm_password = password
        self.vnc_ports = {OWNER: owner_port, VIEWER: viewer_port}
        super().__init__(RequestHandlerClass=KasmRequestHandler, **kwargs)

    def started(self):
        self.msg('  - proxying from %s:%s to 127.0.0.1:%s (%s) and 127.0.0.1:%s (%s)', self.listen_host,
                 self.listen_port, self.vnc_ports[OWNER], OWNER, self.vnc_ports[VIEWER], VIEWER)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--web', required=True, help='web root served to both users')
    parser.add_argument('--cert', required=True, help='PEM file with the certificate and its key')
    parser.add_argument('--owner-port', type=int, default=5901, help="kasm_user's VNC server on 127.0.0.1")
    parser.add_argument('--viewer-port', type=int, default=5902, help="kasm_viewer's view-only VNC server on 127.0.0.1")
    parser.add_argument('listen_port', type=int)
    args = parser.parse_args()
    password = os.environb.get(b'VNC_PW', b'')
    if len(password) < 6:
        parser.error('VNC_PW must be set and at least 6 characters long')

    logger = logging.getLogger(WebSocketProxy.log_prefix)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter('%(message)s'))
    logger.addHandler(handler)

    KasmProxy(password, args.owner_port, args.viewer_port, listen_host='', listen_port=args.listen_port,
              web=args.web, cert=args.cert, ssl_only=True,
              ssl_options=select_ssl_version('default')).start_server()


if __name__ == '__main__':
    sys.exit(main())
