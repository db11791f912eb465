"""A real SMTP server for the notification tests: aiosmtpd (not ours), configured here.

Usage: smtp_server.py OUT_DIR [USER PASSWORD]
With SMTP_DATA_REPLY set (e.g. "451 4.3.0 Try again later"), every message is answered with it
instead of being saved.
Listens on 127.0.0.1 on a free port, prints "PORT <n>" on stdout, saves each message as
OUT_DIR/<n>.eml (with X-Envelope-From / X-Envelope-To / X-Auth-User headers prepended), and
exits when stdin closes. With USER and PASSWORD, AUTH is required (PLAIN/LOGIN, no TLS: the
test relay is on loopback).
"""
import os
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out_dir = sys.argv[1]
creds = (sys.argv[2].encode(), sys.argv[3].encode()) if len(sys.argv) > 3 else None
count = 0
lock = threading.Lock()


class Saver:
    async def handle_DATA(self, server, session, envelope):
        global count
        if os.environ.get("SMTP_DATA_REPLY"):
            with lock:
                count += 1
            open(os.path.join(out_dir, f"refused-{count}"), "w").close()
            return os.environ["SMTP_DATA_REPLY"]
        with lock:
            count += 1
            n = count
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
            f"X-Auth-User: {session.authenticated and creds and creds[0].decode()}\r\n"
        ).encode()
        tmp = os.path.join(out_dir, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(head + envelope.original_content)
        os.rename(tmp, os.path.join(out_dir, f"{n}.eml"))
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == creds
    return AuthResult(success=ok)


kwargs = {}
if creds:
    kwargs = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
import socket

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
ctl = Controller(Saver(), hostname="127.0.0.1", port=port, **kwargs)
ctl.start()
print(f"PORT {port}", flush=True)
sys.stdin.read()
ctl.stop()
