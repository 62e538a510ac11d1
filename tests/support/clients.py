"""Clients the tests speak through: the JSON API with a bearer token, and a user."""

import io

from django.contrib.auth import get_user_model
from django.test import Client

from finetune_hub.auth import token_create


class ApiClient:
    """Django's test Client (full middleware) speaking JSON with a bearer token."""

    def __init__(self, user):
        self.user = user
        self.token = token_create(user=user, name="tests")[1] if user else None
        self.client = Client()

    def _headers(self):
        return {"HTTP_AUTHORIZATION": f"Bearer {self.token}"} if self.token else {}

    def get(self, path, **params):
        return self.client.get(path, params, **self._headers())

    def post(self, path, data=None, **kwargs):
        return self.client.post(
            path, data or {}, content_type="application/json", **self._headers(), **kwargs
        )

    def put(self, path, data=None):
        return self.client.put(path, data or {}, content_type="application/json", **self._headers())

    def delete(self, path):
        return self.client.delete(path, **self._headers())

    def upload(self, path, content: bytes | str, filename="data.jsonl", **fields):
        data = content.encode() if isinstance(content, str) else content
        upload = io.BytesIO(data)
        upload.name = filename
        return self.client.post(path, {"file": upload, **fields}, **self._headers())


def make_user(username):
    return get_user_model().objects.create_user(username, password=f"{username}-pass-123")
