{{- define "konnector.labels" -}}
app.kubernetes.io/name: konnector
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "konnector.selector" -}}
app.kubernetes.io/name: konnector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "konnector.gateway" -}}{{ .Release.Name }}-gateway{{- end }}
{{- define "konnector.executor" -}}{{ .Release.Name }}-executor{{- end }}

{{/* The restricted pod security settings every konnector container runs with. */}}
{{- define "konnector.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "konnector.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "konnector.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}policy/v1{{ else }}policy/v1beta1{{ end }}
{{- end }}

{{- define "konnector.hpaApiVersion" -}}
{{- if semverCompare ">=1.23-0" .Capabilities.KubeVersion.Version }}autoscaling/v2{{ else }}autoscaling/v2beta2{{ end }}
{{- end }}

{{/*
The OpenTelemetry environment of one binary, from .Values.otel; nothing when no endpoint is set.
Call with (dict "root" $ "service" "konnector-gateway").
*/}}
{{- define "konnector.otelEnv" -}}
{{- $service := .service }}
{{- with .root.Values.otel }}
{{- if .endpoint }}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .endpoint | quote }}}
- {name: OTEL_EXPORTER_OTLP_PROTOCOL, value: {{ .protocol | default "grpc" | quote }}}
- {name: OTEL_SERVICE_NAME, value: {{ $service | quote }}}
{{- $attrs := list }}
{{- range $k, $v := .resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $v)) }}
{{- end }}
{{- if $attrs }}
- {name: OTEL_RESOURCE_ATTRIBUTES, value: {{ join "," $attrs | quote }}}
{{- end }}
{{- if .caSecret }}
- {name: OTEL_EXPORTER_OTLP_CERTIFICATE, value: /certs/otel/ca.crt}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The volume mount and volume for .Values.otel.caSecret, when set. */}}
{{- define "konnector.otelVolumeMount" -}}
{{- if and .Values.otel.endpoint .Values.otel.caSecret }}
- {name: otel-ca, mountPath: /certs/otel, readOnly: true}
{{- end }}
{{- end }}
{{- define "konnector.otelVolume" -}}
{{- if and .Values.otel.endpoint .Values.otel.caSecret }}
- name: otel-ca
  secret: {secretName: {{ .Values.otel.caSecret }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end }}
