"""Real object-store servers on loopback for the object-storage tests: moto's S3 server,
in this process, with IAM authentication on, so keys, secrets and policies are checked
as S3 checks them; and Azurite, Microsoft's Azure Blob Storage emulator (npm)."""

import json
import logging
import os
import socket
import subprocess
import time
import uuid

import boto3
import moto.settings
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


class S3Server:
    def __init__(self, port):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = port
        self.endpoint = f"127.0.0.1:{port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        # Users are created before authentication is switched on, by anyone.
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        self.admin_keys = self.new_user("admin", ["*"])
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        self.admin = self.client(self.admin_keys)

    def client(self, keys, service="s3"):
        return boto3.client(service, endpoint_url=f"http://{self.endpoint}", aws_access_key_id=keys[0],
                            aws_secret_access_key=keys[1], region_name=REGION)

    def new_user(self, name, actions, resource="*"):
        """An IAM user allowed `actions` on `resource`: its (key id, secret)."""
        iam = self.client(getattr(self, "admin_keys", ("x", "x")), "iam")
        name = f"{name}_{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        self.set_policy(name, actions, resource)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"], name

    def set_policy(self, user, actions, resource="*"):
        iam = self.client(getattr(self, "admin_keys", ("x", "x")), "iam")
        statement = {"Effect": "Allow", "Action": actions, "Resource": resource}
        iam.put_user_policy(UserName=user, PolicyName="lake",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))

    def new_bucket(self):
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.admin.create_bucket(Bucket=name)
        return name

    def keys(self, bucket, prefix=""):
        pages = self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def stop(self):
        self._server.stop()

    def restart(self):
        """The same server (its buckets live in this process) accepting requests again."""
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def server_options(self):
        """The options of a ducklake server that reaches this store."""
        return {"endpoint": self.endpoint, "url_style": "path", "use_ssl": "false", "region": REGION}

    def secret_statement(self, keys, scope):
        """The reference client's secret for this store."""
        return (f"CREATE SECRET (TYPE s3, KEY_ID '{keys[0]}', SECRET '{keys[1]}', ENDPOINT '{self.endpoint}', "
                f"URL_STYLE 'path', USE_SSL false, REGION '{REGION}', SCOPE '{scope}')")


def azurite_dir():
    """Where the setup script installed Azurite (scripts/env.sh)."""
    if "AZURITE_DIR" in os.environ:
        return os.environ["AZURITE_DIR"]
    env = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "env.sh")
    return subprocess.run(["bash", "-c", f'source "{env}"; echo "$AZURITE_DIR"'], check=True, capture_output=True,
                          text=True).stdout.strip()


class AzureServer:
    """Azurite's Blob service, with its well-known development account."""

    ACCOUNT = "devstoreaccount1"
    KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    def __init__(self, port, location):
        from azure.storage.blob import BlobServiceClient
        logging.getLogger("azure").setLevel(logging.WARNING)
        self.port = port
        self.endpoint = f"127.0.0.1:{port}"
        binary = os.path.join(azurite_dir(), "node_modules", ".bin", "azurite-blob")
        self._process = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location), "--silent",
             "--skipApiVersionCheck"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Azurite did not start"
                time.sleep(0.05)
        self.client = BlobServiceClient.from_connection_string(self.connection_string(self.KEY))

    def connection_string(self, key):
        return (f"DefaultEndpointsProtocol=http;AccountName={self.ACCOUNT};AccountKey={key};"
                f"BlobEndpoint=http://{self.endpoint}/{self.ACCOUNT};")

    def new_container(self):
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.client.create_container(name)
        return name

    def blobs(self, container, prefix=""):
        return sorted(b.name for b in self.client.get_container_client(container).list_blobs(name_starts_with=prefix))

    def server_options(self):
        return {"account_name": self.ACCOUNT, "endpoint": self.endpoint, "use_ssl": "false"}

    def secret_statement(self, scope):
        return f"CREATE SECRET (TYPE azure, CONNECTION_STRING '{self.connection_string(self.KEY)}', SCOPE '{scope}')"

    def stop(self):
        # Azurite's graceful shutdown waits for idle keep-alive connections (minutes).
        self._process.kill()
        self._process.wait()
