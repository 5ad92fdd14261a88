#!/usr/bin/env python3
"""Lists a gRPC server's services and describes one method through server reflection,
with the stock Python stack (grpcio-reflection, which speaks reflection v1alpha).

Usage: grpc_reflect.py HOST:PORT FULL.METHOD.NAME
Prints one JSON object: {"services": [...], "method": {"input": ..., "output": ...}}.
"""
import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def main():
    target, method = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(db.get_services())
        pool = DescriptorPool(db)
        m = pool.FindMethodByName(method)
        print(json.dumps({
            "services": services,
            "method": {
                "input": m.input_type.full_name,
                "output": m.output_type.full_name,
                "input_fields": [f.name for f in m.input_type.fields],
            },
        }))


if __name__ == "__main__":
    main()
