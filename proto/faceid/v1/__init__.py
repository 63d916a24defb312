"""faceid.v1: generated protobuf messages (faceid_pb2, ...) and gRPC stubs (faceid_pb2_grpc, ...)."""
