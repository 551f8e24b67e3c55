"""Every dataset topic as an AsyncAPI 3.0.0 document.

One channel per topic: ``data.<slug>`` (and ``data.<slug>.v<N>`` for each
later major version) that consumers receive from, and ``raw.<slug>`` that
Kafka-native producers send to. A record's payload is the dataset's JSON Schema
(2020-12, as a multi-format schema); its headers are the CloudEvents binary-mode
attributes; Kafka bindings give the topic, partitions, retention and the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datapolis_catalog.datasets import Dataset, SchemaVersion
from datapolis_catalog.provisioning import DAY_MS
from datapolis_shared.settings import KafkaSettings

ASYNCAPI_VERSION = "3.0.0"
JSON_SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
KAFKA_BINDING_VERSION = "0.5.0"

CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes, Kafka protocol binding, binary content mode.",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type"],
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "description": "Unique per record: deduplicate on it."},
        "ce_source": {"type": "string", "description": "Who produced the record (URI reference)."},
        "ce_type": {"type": "string", "description": "The kind of record."},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string"},
        "ce_dataschema": {
            "type": "string",
            "format": "uri",
            "description": "The catalog URL of the schema version the record was validated with.",
        },
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def _servers(kafka: KafkaSettings, bootstrap: str) -> tuple[dict[str, Any], dict[str, Any]]:
    secure = kafka.security_protocol in ("SSL", "SASL_SSL")
    server: dict[str, Any] = {
        "host": bootstrap.split(",")[0].strip(),
        "protocol": "kafka-secure" if secure else "kafka",
        "description": f"Kafka bootstrap servers: {bootstrap}",
        "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION}},
    }
    schemes: dict[str, Any] = {}
    if kafka.sasl_mechanism:
        scheme_type = {
            "PLAIN": "plain",
            "SCRAM-SHA-256": "scramSha256",
            "SCRAM-SHA-512": "scramSha512",
        }[kafka.sasl_mechanism]
        schemes["sasl"] = {"type": scheme_type, "description": "Credentials from the operator."}
        server["security"] = [{"$ref": "#/components/securitySchemes/sasl"}]
    return {"kafka": server}, schemes


def _message(dataset: Dataset, schema: SchemaVersion) -> dict[str, Any]:
    key_doc = (
        f"The record's '{dataset.key_field}' value."
        if dataset.key_field
        else "Chosen by the producer (the dataset declares no key field)."
    )
    return {
        "name": f"{dataset.slug}-record",
        "title": f"{dataset.title} (schema version {schema.version})",
        "summary": dataset.description[:280] or dataset.title,
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
        "payload": {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": schema.json_schema},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": key_doc},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _channel(
    dataset: Dataset, topic: str, message_id: str, replicas: int, description: str
) -> dict[str, Any]:
    return {
        "address": topic,
        "title": dataset.title,
        "description": description,
        "servers": [{"$ref": "#/servers/kafka"}],
        "messages": {"record": {"$ref": f"#/components/messages/{message_id}"}},
        "bindings": {
            "kafka": {
                "topic": topic,
                "partitions": dataset.partitions,
                "replicas": replicas,
                "topicConfiguration": {
                    "cleanup.policy": ["delete"],
                    "retention.ms": dataset.retention_days * DAY_MS,
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def build_asyncapi(
    datasets: Sequence[Dataset],
    schemas: Mapping[str, Sequence[SchemaVersion]],
    *,
    kafka: KafkaSettings,
    bootstrap: str,
    title: str,
    base_url: str,
) -> dict[str, Any]:
    servers, security_schemes = _servers(kafka, bootstrap)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for dataset in datasets:
        majors = schemas.get(dataset.dataset_id, [])
        for schema in majors:
            suffix = "" if schema.major == 1 else f"-v{schema.major}"
            channel_id = f"data-{dataset.slug}{suffix}"
            message_id = f"{dataset.slug}-v{schema.version}"
            messages[message_id] = _message(dataset, schema)
            channels[channel_id] = _channel(
                dataset,
                schema.topic_name,
                message_id,
                kafka.replication_factor,
                f"Validated records of '{dataset.slug}', major version {schema.major} "
                f"({dataset.access_level} data; see {base_url}/datasets/{dataset.slug}).",
            )
            operations[f"receive-{channel_id}"] = {
                "action": "receive",
                "title": f"Receive {dataset.slug} records (major version {schema.major})",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/record"}],
            }
        if not majors:
            continue
        current_id = f"{dataset.slug}-v{majors[-1].version}"
        raw_id = f"raw-{dataset.slug}"
        channels[raw_id] = _channel(
            dataset,
            dataset.raw_topic,
            current_id,
            kafka.replication_factor,
            f"Records produced straight to Kafka for '{dataset.slug}', before validation; "
            "ingest validates them against the current schema.",
        )
        operations[f"send-{raw_id}"] = {
            "action": "send",
            "title": f"Produce {dataset.slug} records straight to Kafka",
            "channel": {"$ref": f"#/channels/{raw_id}"},
            "messages": [{"$ref": f"#/channels/{raw_id}/messages/record"}],
        }
    components: dict[str, Any] = {
        "schemas": {"CloudEventsHeaders": CLOUDEVENTS_HEADERS},
        "messages": messages,
    }
    if security_schemes:
        components["securitySchemes"] = security_schemes
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{title}: data streams",
            "version": "1.0.0",
            "description": (
                "Every dataset topic of the metropolitan data bus. Records are CloudEvents "
                "in binary mode: a plain Kafka client reads the record's JSON as the value."
            ),
            "externalDocs": {"url": f"{base_url}/docs"},
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": components,
    }
