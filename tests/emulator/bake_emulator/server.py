"""Serve moto with bake's extension on 127.0.0.1.

Usage: python -m bake_emulator.server [--host 127.0.0.1] [--port 0]

Port 0 picks a free port. The first line on stdout is always
``listening on http://HOST:PORT`` once the server accepts connections, so a parent
process can read the endpoint without racing for a port.
"""

import argparse
import json
import logging
import os
import signal
import sys
import urllib.parse

from werkzeug.serving import make_server

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from . import autoscaling, cloudformation, cloudwatch, cloudwatch_cbor, ec2, ec2_images, iam

NOTIFICATIONS_PATH = "/bake-emulator/sns-notifications"


def notifications_app(app):
    """``GET /bake-emulator/sns-notifications[?TopicArn=ARN&Region=R]``: the messages published to
    SNS topics (alarm actions among them) as a JSON list, for tests. Everything else goes on."""

    def serve(environ, start_response):
        if environ.get("PATH_INFO") != NOTIFICATIONS_PATH:
            return app(environ, start_response)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        region = (query.get("Region") or ["us-east-1"])[0]
        topic = (query.get("TopicArn") or [None])[0]
        account = (query.get("Account") or ["123456789012"])[0]
        with autoscaling._cond:  # noqa: SLF001 - the emulator's one lock
            body = json.dumps(cloudwatch.sns_notifications(account, region, topic)).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return serve


def build_app():
    """The WSGI application: moto's dispatcher with the extension installed."""
    autoscaling.install()
    ec2.install()
    ec2_images.install()
    cloudwatch.install()
    cloudformation.install()
    iam.install()
    app = DomainDispatcherApplication(create_backend_app)
    app = notifications_app(cloudwatch_cbor.wrap(app))
    app = iam.role_credentials_app(app, autoscaling._cond)  # noqa: SLF001 - the emulator's one lock
    return iam.received_body_app(app)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the emulator only listens on loopback")

    # One line per request drowns the output of the demo and the tests; BAKE_EMULATOR_LOG_REQUESTS=1
    # brings werkzeug's access log back.
    if os.environ.get("BAKE_EMULATOR_LOG_REQUESTS") != "1":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = build_app()
    server = make_server(args.host, args.port, app, threaded=True)
    port = server.socket.getsockname()[1]
    # moto builds some URLs (presigned, queue URLs) from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)

    def stop(_signum, _frame):
        # serve_forever checks this flag; raising from here would leave threads behind.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        autoscaling.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
