{{/*
The standard labels of every object. Call with the root context, or with (dict "root" $ "component" "gateway") to
add app.kubernetes.io/component (every object of this chart names one; the root form stays for templates that
add their own).
*/}}
{{- define "konnector.labels" -}}
{{- $root := . }}
{{- $component := "" }}
{{- if hasKey . "root" }}{{ $root = .root }}{{ $component = .component }}{{ end }}
app.kubernetes.io/name: konnector
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
{{- with $component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: konnector
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name ($root.Chart.Version | replace "+" "_") }}
{{- include "konnector.commonLabels" $root }}
{{- end }}

{{/* The stable part of every selector (the component is added next to it); never add a label that changes. */}}
{{- define "konnector.selector" -}}
app.kubernetes.io/name: konnector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Scheduling and pod-metadata values of one component. Call with (dict "root" $ "component" "gateway" "values"
.Values.gateway). The default spread puts the replicas on different nodes when it can.
*/}}
{{- define "konnector.scheduling" -}}
{{- $v := .values }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- /* Single-architecture images (image.architectures) pin their pods to that architecture's nodes. */}}
{{- $nodeSelector := deepCopy ($v.nodeSelector | default (dict)) }}
{{- $archs := .root.Values.image.architectures | default (list) }}
{{- if and (eq (len $archs) 1) (not (hasKey $nodeSelector "kubernetes.io/arch")) }}
{{- $_ := set $nodeSelector "kubernetes.io/arch" (first $archs) }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints: {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else }}
topologySpreadConstraints:
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels: {{- include "konnector.selector" .root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* Pod template metadata: the selector labels, podLabels, podAnnotations. Same call as konnector.scheduling. */}}
{{- define "konnector.podMetadata" -}}
labels: {{- include "konnector.selector" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
  app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
  app.kubernetes.io/part-of: konnector
  {{- range $k, $v := .root.Values.commonLabels }}
  {{ $k }}: {{ $v | toString | quote }}
  {{- end }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .values.podAnnotations }}
annotations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A PodDisruptionBudget for one component, only when it runs more than one pod: with one replica any budget either
blocks `kubectl drain` (minAvailable: 1) or allows everything, so none is rendered. Call with (dict "root" $
"component" "gateway" "values" .Values.gateway "replicas" N).
*/}}
{{- define "konnector.pdb" -}}
{{- if and .values.podDisruptionBudget.enabled (gt (int .replicas) 1) }}
---
apiVersion: {{ include "konnector.pdbApiVersion" .root }}
kind: PodDisruptionBudget
metadata:
  name: {{ include "konnector.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels: {{- include "konnector.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  maxUnavailable: {{ .values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels: {{- include "konnector.selector" .root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* The cert-manager issuer that signs the leaf certificates: the user's, or the chart's own CA. */}}
{{- define "konnector.issuerRef" -}}
{{- with .Values.certManager.issuerRef }}
{{- if .name }}
{name: {{ .name }}, kind: {{ .kind | default "Issuer" }}, group: {{ .group | default "cert-manager.io" }}}
{{- else }}
{name: {{ include "konnector.fullname" $ }}-ca, kind: Issuer, group: cert-manager.io}
{{- end }}
{{- end }}
{{- end }}

{{- define "konnector.gateway" -}}{{ include "konnector.fullname" . }}-gateway{{- end }}
{{- define "konnector.executor" -}}{{ include "konnector.fullname" . }}-executor{{- end }}

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
{{- if .compression }}
- {name: OTEL_EXPORTER_OTLP_COMPRESSION, value: {{ .compression | quote }}}
{{- end }}
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

{{/*
A container's preStop: sleep `seconds` before SIGTERM, while endpoints stop sending the pod new connections, so an
upgrade or scale-down drops no hook call. The sleep action needs Kubernetes >= 1.30 (the images are distroless,
with no shell or sleep binary to exec); on older clusters nothing is rendered and the binaries' own drain on
SIGTERM (not ready, stop accepting, finish in-flight calls) is all there is.
*/}}
{{- define "konnector.preStop" -}}
{{- $seconds := int .seconds }}
{{- if and (gt $seconds 0) (semverCompare ">=1.30-0" .root.Capabilities.KubeVersion.Version) }}
lifecycle:
  preStop:
    sleep: {seconds: {{ $seconds }}}
{{- end }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else <release>-<nameOverride> (the release name alone when it
contains nameOverride), else the release name. Overrides are cut to 40 characters so that the longest derived name
(<fullname>-executor-metrics) is still a valid Service name.
*/}}
{{- define "konnector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if and .Values.nameOverride (not (contains .Values.nameOverride .Release.Name)) }}
{{- printf "%s-%s" .Release.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- .Release.Name }}
{{- end }}
{{- end }}

{{/* commonLabels, one per line, each line starting with a newline (nothing when there are none). */}}
{{- define "konnector.commonLabels" -}}
{{- range $k, $v := .Values.commonLabels }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/*
One binary's image reference: [registry/]repository:tag[@digest]. Call with (dict "root" $ "image"
.Values.image.gateway). The registry is image.registry, else global.imageRegistry; it replaces the repository's
own registry host, so a mirror keeps the path (ghcr.io/konnector/x becomes mirror.example.com/konnector/x).
*/}}
{{- define "konnector.image" -}}
{{- $root := .root }}
{{- $registry := $root.Values.image.registry | default (dig "imageRegistry" "" ($root.Values.global | default dict)) }}
{{- $ref := .image.repository }}
{{- with $registry }}
{{- /* The repository's own registry host (its first part, when it has a dot or a port, or is localhost) is replaced. */}}
{{- $parts := splitn "/" 2 $ref }}
{{- if and $parts._1 (or (contains "." $parts._0) (contains ":" $parts._0) (eq $parts._0 "localhost")) }}{{ $ref = $parts._1 }}{{ end }}
{{- $ref = printf "%s/%s" (trimSuffix "/" .) $ref }}
{{- end }}
{{- $ref = printf "%s:%s" $ref (.image.tag | default $root.Chart.AppVersion) }}
{{- with .image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end }}
{{- $ref }}
{{- end }}

{{/* imagePullSecrets: the chart's, then global.imagePullSecrets (names or {name: …} objects). */}}
{{- define "konnector.imagePullSecrets" -}}
{{- $secrets := list }}
{{- range .Values.imagePullSecrets }}{{ $secrets = append $secrets (dict "name" .name) }}{{ end }}
{{- range (dig "imagePullSecrets" list (.Values.global | default dict)) }}
{{- if kindIs "string" . }}{{ $secrets = append $secrets (dict "name" .) }}{{ else }}{{ $secrets = append $secrets (dict "name" .name) }}{{ end }}
{{- end }}
{{- with $secrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The pod security context: the restricted defaults (konnector.podSecurityContext), without the fixed user when
runAsFixedUser is false, with .Values.podSecurityContext merged over them key by key.
*/}}
{{- define "konnector.podSecurityContextFromValues" -}}
{{- $defaults := include "konnector.podSecurityContext" . | fromYaml }}
{{- if not .Values.runAsFixedUser }}
{{- $defaults = omit $defaults "runAsUser" "runAsGroup" "fsGroup" }}
{{- end }}
{{- toYaml (mergeOverwrite $defaults (deepCopy (.Values.podSecurityContext | default dict))) }}
{{- end }}

{{/* The container security context: konnector.containerSecurityContext with .Values.containerSecurityContext merged over it. */}}
{{- define "konnector.containerSecurityContextFromValues" -}}
{{- $defaults := include "konnector.containerSecurityContext" . | fromYaml }}
{{- toYaml (mergeOverwrite $defaults (deepCopy (.Values.containerSecurityContext | default dict))) }}
{{- end }}

{{/* The leaf certificates' lifetime and key policy: a new key at every renewal. */}}
{{- define "konnector.leafLifetime" -}}
duration: {{ .Values.certManager.leafDuration }}
renewBefore: {{ .Values.certManager.leafRenewBefore }}
privateKey: {algorithm: ECDSA, size: 256, rotationPolicy: Always}
{{- end }}
