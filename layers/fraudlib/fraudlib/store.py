"""S3 access: the incoming bucket and the artifacts bucket, behind two small classes.

Tests point these at the emulator by passing a client made by :func:`fraudlib.aws.client`.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from fraudlib.layout import (
    CHAMPION_POINTER_KEY,
    bundle_key,
    clean_etag,
    quarantine_error_key,
    quarantine_key,
)
from fraudlib.pointer import ChampionPointer
from fraudlib.profile import ReferenceProfile

JSON_CONTENT_TYPE = "application/json"


class ObjectGoneError(LookupError):
    """The object named by an event no longer exists."""


class ObjectChangedError(LookupError):
    """The object was overwritten after the event was sent (its ETag differs)."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class OpenedObject:
    body: BinaryIO
    size_bytes: int
    etag: str


class IncomingStore:
    """The bucket users drop batches into."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def open_batch(self, key: str, etag: str) -> OpenedObject:
        """Open the exact version of ``key`` that the event announced, for streaming.

        Raises
        ------
        ObjectGoneError
            The object was deleted.
        ObjectChangedError
            The object was overwritten since (its own event will follow).
        """
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key, IfMatch=f'"{clean_etag(etag)}"')
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("NoSuchKey", "404"):
                raise ObjectGoneError(f"s3://{self.bucket}/{key} no longer exists") from exc
            if code in ("PreconditionFailed", "412"):
                raise ObjectChangedError(f"s3://{self.bucket}/{key} changed since ETag {etag}") from exc
            raise
        return OpenedObject(
            body=response["Body"],
            size_bytes=int(response["ContentLength"]),
            etag=clean_etag(response["ETag"]),
        )

    def quarantine(self, key: str, etag: str, error_report: dict[str, Any]) -> tuple[str, str]:
        """Copy the batch to ``quarantine/`` with its error report beside it.

        The original stays where it is: nothing a user sent is ever deleted by the pipeline.

        Returns
        -------
        (copy key, error report key)
        """
        copy_key = quarantine_key(key)
        report_key = quarantine_error_key(key)
        self._s3.copy_object(
            Bucket=self.bucket,
            Key=copy_key,
            CopySource={"Bucket": self.bucket, "Key": key},
            CopySourceIfMatch=f'"{clean_etag(etag)}"',
        )
        self._s3.put_object(
            Bucket=self.bucket,
            Key=report_key,
            Body=json.dumps(error_report, indent=2).encode("utf-8"),
            ContentType=JSON_CONTENT_TYPE,
        )
        return copy_key, report_key


class ArtifactStore:
    """The bucket of reports, records, model bundles and the champion pointer."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(document, indent=2, allow_nan=False).encode("utf-8"),
            ContentType=JSON_CONTENT_TYPE,
        )

    def get_json(self, key: str) -> dict[str, Any] | None:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def champion_pointer(self) -> ChampionPointer | None:
        """The served model's pointer, or None before the first model is promoted."""
        data = self.get_bytes(CHAMPION_POINTER_KEY)
        return None if data is None else ChampionPointer.from_json(data)

    def champion_pointer_etag(self) -> str | None:
        """The pointer's ETag (one HEAD request), or None before the first promotion."""
        try:
            return clean_etag(self._s3.head_object(Bucket=self.bucket, Key=CHAMPION_POINTER_KEY)["ETag"])
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def champion_pointer_with_etag(self) -> tuple[ChampionPointer, str] | None:
        """The pointer and the ETag of the very version read (one GET)."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=CHAMPION_POINTER_KEY)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return ChampionPointer.from_json(response["Body"].read()), clean_etag(response["ETag"])

    def bundle_files(self, model_version: str, names: tuple[str, ...]) -> dict[str, bytes | None]:
        """The named files of a bundle (None for a missing one), fetched in parallel: one
        GET each costs a round trip to S3 (tens of ms), and they sit in every cold start."""
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            contents = pool.map(lambda name: self.get_bytes(bundle_key(model_version, name)), names)
            return dict(zip(names, contents, strict=True))

    def put_champion_pointer(self, pointer: ChampionPointer) -> None:
        """Switch the served model. Call only after every file of the bundle is written."""
        self.put_bytes(CHAMPION_POINTER_KEY, pointer.to_json(), JSON_CONTENT_TYPE)

    def reference_profile(self, key: str) -> ReferenceProfile:
        data = self.get_bytes(key)
        if data is None:
            raise ObjectGoneError(f"reference profile {self.uri(key)} does not exist")
        return ReferenceProfile.from_bytes(data)
