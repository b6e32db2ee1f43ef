"""The decision core: pure, typed, free of gRPC, HTTP, SQL and Kubernetes."""
