//! konnector's executor: credentials and the HelmChartProxy lifecycle, over gRPC.
