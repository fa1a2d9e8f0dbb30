"""A real S3-protocol server on loopback for the object-storage tests: moto's, in this
process, with IAM authentication on, so keys, secrets and policies are checked as S3
checks them."""

import json
import logging
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
