{{/* Chart name, truncated for DNS. */}}
{{- define "extauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name: <release>-temporal-extauthz, or the release name if it already has it. */}}
{{- define "extauthz.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "extauthz.envoyName" -}}
{{- printf "%s-envoy" (include "extauthz.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extauthz.headlessName" -}}
{{- printf "%s-headless" (include "extauthz.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extauthz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "extauthz.labels" -}}
helm.sh/chart: {{ include "extauthz.chart" . }}
{{ include "extauthz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: temporal
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "extauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component ("authz" or "envoy"); call with (dict "ctx" $ "component" "authz"). */}}
{{- define "extauthz.componentLabels" -}}
{{ include "extauthz.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "extauthz.componentSelector" -}}
{{ include "extauthz.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "extauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "extauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: repository@digest or repository:tag (tag defaults to appVersion). */}}
{{- define "extauthz.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "extauthz.temporalNamespace" -}}
{{- default .Release.Namespace .Values.temporal.namespace }}
{{- end }}

{{/* DNS name of the Temporal frontend Service. */}}
{{- define "extauthz.frontendHost" -}}
{{- $host := .Values.temporal.frontend.host }}
{{- if contains "." $host }}
{{- $host }}
{{- else }}
{{- printf "%s.%s.svc.%s" $host (include "extauthz.temporalNamespace" .) .Values.clusterDomain }}
{{- end }}
{{- end }}

{{/* DNS names of the authz server's Services. */}}
{{- define "extauthz.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "extauthz.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "extauthz.headlessHost" -}}
{{- printf "%s.%s.svc.%s" (include "extauthz.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "extauthz.serverTlsSecret" -}}
{{- default (printf "%s-server-tls" (include "extauthz.fullname" .)) .Values.tls.serverSecret }}
{{- end }}

{{- define "extauthz.clientTlsSecret" -}}
{{- default (printf "%s-client-tls" (include "extauthz.fullname" .)) .Values.tls.clientSecret }}
{{- end }}

{{/* Whether a policy file is mounted. */}}
{{- define "extauthz.hasPolicy" -}}
{{- if or .Values.extauthz.existingPolicyConfigMap .Values.extauthz.policy }}true{{- end }}
{{- end }}

{{/* Default topology spread: zones, then nodes, never blocking scheduling. */}}
{{- define "extauthz.topologySpread" -}}
{{- $component := .component }}
{{- if .constraints }}
{{- toYaml .constraints }}
{{- else }}
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "extauthz.componentSelector" (dict "ctx" $.ctx "component" $component) | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The authz server's config file (docs/configuration.md); chart-managed keys first. */}}
{{- define "extauthz.configFile" -}}
{{- $v := .Values.extauthz }}
{{- $cfg := dict "listen" (printf "0.0.0.0:%d" (int $v.port)) "workers" (int $v.workers) "log_level" $v.logLevel "log_format" $v.logFormat }}
{{- if $v.metrics.enabled }}
{{- $_ := set $cfg "metrics_listen" (printf "0.0.0.0:%d" (int $v.metrics.port)) }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ := set $cfg "health_listen" (printf "0.0.0.0:%d" (include "extauthz.healthPort" . | int)) }}
{{- $_ := set $cfg "tls" (dict "cert_file" "/etc/extauthz/tls/tls.crt" "key_file" "/etc/extauthz/tls/tls.key" "client_ca_file" "/etc/extauthz/tls/ca.crt" "require_client_cert" .Values.tls.requireClientCert) }}
{{- end }}
{{- if include "extauthz.hasPolicy" . }}
{{- $_ := set $cfg "policy_file" "/etc/extauthz/policy/policy.yaml" }}
{{- end }}
{{- if .Values.peerIdentity.enabled }}
{{- $_ := set $cfg "peer_identity" (dict "enabled" true "fields" .Values.peerIdentity.fields "trust_domains" .Values.peerIdentity.trustDomains) }}
{{- end }}
{{- toYaml (merge $cfg (deepCopy $v.config)) }}
{{- end }}

{{/* A file-based SDS resource for Envoy, watching the Secret volume for rotations. */}}
{{- define "extauthz.sdsSource" -}}
sds_config:
  resource_api_version: V3
  path_config_source:
    path: /etc/envoy/config/{{ .file }}
    watched_directory:
      path: {{ .dir }}
{{- end }}

{{/* "true" when Envoy talks to the server over the HTTP ext_authz protocol (transport: http). */}}
{{- define "extauthz.http" -}}
{{- if eq .Values.transport "http" }}true{{- end }}
{{- end }}

{{/* The server port Envoy / the sidecars call: the HTTP port or the gRPC Check port. */}}
{{- define "extauthz.checkPort" -}}
{{- if include "extauthz.http" . }}{{ .Values.extauthz.httpPort }}{{- else }}{{ .Values.extauthz.port }}{{- end }}
{{- end }}

{{/* The plaintext gRPC health port (tls.enabled; kubelet probes cannot present a client
certificate): extauthz.healthPort, or, with transport http where that is also the HTTP port (both
default 9192), the gRPC `port`, which transport http leaves unused. */}}
{{- define "extauthz.healthPort" -}}
{{- $v := .Values.extauthz }}
{{- if and (include "extauthz.http" .) (eq (int $v.healthPort) (int $v.httpPort)) }}{{ $v.port }}{{- else }}{{ $v.healthPort }}{{- end }}
{{- end }}

{{/* Name of that port on the container and the Services. */}}
{{- define "extauthz.checkPortName" -}}
{{- ternary "http" "grpc" (eq .Values.transport "http") }}
{{- end }}

{{/* The meshConfig extensionProviders name: istio.provider, or one per transport. */}}
{{- define "extauthz.istioProvider" -}}
{{- if .Values.istio.provider }}{{ .Values.istio.provider }}{{- else }}{{ ternary "temporal-extauthz-http" "temporal-extauthz" (eq .Values.transport "http") }}{{- end }}
{{- end }}
