//! konnector's gateway: the CAPI Runtime SDK over HTTPS, translated into executor gRPC calls.
