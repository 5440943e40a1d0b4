{{/* Chart name (app.kubernetes.io/name). */}}
{{- define "traceprobe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* Object-name prefix: the release name, suffixed with the chart name unless it
contains it. 40 characters leave room for "-service-map" and "-operator". */}}
{{- define "traceprobe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "traceprobe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{ include "traceprobe.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: traceprobe
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* Labels that select a component's pods; pass (dict "ctx" $ "component" "..."). */}}
{{- define "traceprobe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "traceprobe.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Names of the three components' objects and ServiceAccounts. */}}
{{- define "traceprobe.operatorName" -}}
{{ include "traceprobe.fullname" . }}-operator
{{- end }}
{{- define "traceprobe.agentName" -}}
{{ include "traceprobe.fullname" . }}-agent
{{- end }}
{{- define "traceprobe.serviceMapName" -}}
{{ include "traceprobe.fullname" . }}-service-map
{{- end }}

{{/* Objects that exist only when the agents' /metrics listen beyond loopback. */}}
{{- define "traceprobe.agentMetricsAuthName" -}}
{{ include "traceprobe.agentName" . }}-metrics-auth
{{- end }}
{{- define "traceprobe.metricsReaderName" -}}
{{ include "traceprobe.fullname" . }}-metrics-reader
{{- end }}
{{- define "traceprobe.metricsScraperName" -}}
{{ include "traceprobe.fullname" . }}-metrics-scraper
{{- end }}
{{/* "true" when the agents' /metrics listen beyond the node's loopback (HTTPS + tokens). */}}
{{- define "traceprobe.agentMetricsSecured" -}}
{{- if ne .Values.agent.metrics.listen "loopback" }}true{{ end }}
{{- end }}
{{/* The PodMonitor's token Secret: the user's, or the chart's scraper ServiceAccount's. */}}
{{- define "traceprobe.metricsTokenSecret" -}}
{{ .Values.agent.metrics.podMonitor.tokenSecret.name | default (printf "%s-token" (include "traceprobe.metricsScraperName" .)) }}
{{- end }}

{{/* How the agent pods run: TRACEPROBE_AGENT_POD, JSON that the operator parses into
traceprobe_operator.settings.AgentPodSettings (refusing unknown keys). */}}
{{- define "traceprobe.agentPod" -}}
{{- $a := .Values.agent -}}
{{- dict "tolerations" $a.tolerations "priorityClassName" $a.priorityClassName
      "resources" $a.resources "updateStrategy" $a.updateStrategy
      "healthPort" $a.healthPort "memlockCapability" $a.memlockCapability
      "metrics" (dict "listen" $a.metrics.listen "port" $a.metrics.port) | toJson -}}
{{- end }}

{{- define "traceprobe.operatorServiceAccount" -}}
{{ .Values.operator.serviceAccount.name | default (include "traceprobe.operatorName" .) }}
{{- end }}
{{- define "traceprobe.agentServiceAccount" -}}
{{ .Values.agent.serviceAccount.name | default (include "traceprobe.agentName" .) }}
{{- end }}
{{- define "traceprobe.serviceMapServiceAccount" -}}
{{ .Values.serviceMap.serviceAccount.name | default (include "traceprobe.serviceMapName" .) }}
{{- end }}

{{/* Image references; an empty tag means the chart's appVersion. */}}
{{- define "traceprobe.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- define "traceprobe.agentImage" -}}
{{ .Values.agent.image.repository }}:{{ .Values.agent.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Where agents send their reports: the service map's gRPC ingest, by Service DNS name. */}}
{{/* Secret of the map's ingest certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "traceprobe.serviceMapTlsSecret" -}}
{{ include "traceprobe.serviceMapName" . }}-tls
{{- end }}

{{/* The Service agents send to; the view has its own (serviceMapName). */}}
{{- define "traceprobe.serviceMapIngestName" -}}
{{ include "traceprobe.serviceMapName" . }}-ingest
{{- end }}

{{- define "traceprobe.mapEndpoint" -}}
{{ include "traceprobe.serviceMapIngestName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.serviceMap.ingestPort }}
{{- end }}

{{/* Container securityContext of the operator, the service map and the test pod:
no root, no privilege escalation, no capabilities, nothing written but /tmp. */}}
{{- define "traceprobe.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Rules the schema cannot state clearly; each failure names the values involved. */}}
{{- define "traceprobe.validate" -}}
{{- $export := .Values.serviceMap.export }}
{{- if and $export.headersSecret.name (not (hasPrefix "https://" $export.endpoint)) }}
{{- fail "serviceMap.export.headersSecret needs an https:// serviceMap.export.endpoint: headers usually carry credentials and must not cross the network in clear text" }}
{{- end }}
{{- if and $export.caSecret.name (not (hasPrefix "https://" $export.endpoint)) }}
{{- fail "serviceMap.export.caSecret needs an https:// serviceMap.export.endpoint (http:// is plaintext)" }}
{{- end }}
{{- if eq (int .Values.serviceMap.ingestPort) (int .Values.serviceMap.httpPort) }}
{{- fail "serviceMap.ingestPort and serviceMap.httpPort must differ" }}
{{- end }}
{{- $certManager := .Values.serviceMap.ingestAuth.certManager }}
{{- if and $certManager.enabled (not .Values.serviceMap.ingestAuth.enabled) }}
{{- fail "serviceMap.ingestAuth.certManager.enabled needs serviceMap.ingestAuth.enabled: without it the ingest is plaintext and uses no certificate" }}
{{- end }}
{{- if and $certManager.enabled (not $certManager.issuerRef.name) }}
{{- fail "serviceMap.ingestAuth.certManager.enabled needs serviceMap.ingestAuth.certManager.issuerRef.name: the Issuer or ClusterIssuer that signs the ingest certificate" }}
{{- end }}
{{- if and $certManager.enabled (not (.Capabilities.APIVersions.Has "cert-manager.io/v1")) }}
{{- fail "serviceMap.ingestAuth.certManager.enabled needs the cert-manager.io/v1 API (cert-manager's CRDs), which this cluster does not serve; install cert-manager first (with helm template: --api-versions cert-manager.io/v1)" }}
{{- end }}
{{- $metrics := .Values.agent.metrics }}
{{- if eq (int .Values.agent.healthPort) (int $metrics.port) }}
{{- fail "agent.healthPort and agent.metrics.port must differ: both are ports of the node" }}
{{- end }}
{{- if and $metrics.podMonitor.enabled (eq $metrics.listen "loopback") }}
{{- fail "agent.metrics.podMonitor.enabled needs agent.metrics.listen hostIP or all: on loopback nothing off the node can scrape the agents" }}
{{- end }}
{{- if and $metrics.readers (eq $metrics.listen "loopback") }}
{{- fail "agent.metrics.readers needs agent.metrics.listen hostIP or all: on loopback /metrics takes no token" }}
{{- end }}
{{- $monitoring := .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}
{{- range $value, $on := dict "agent.metrics.podMonitor.enabled" $metrics.podMonitor.enabled "serviceMap.serviceMonitor.enabled" .Values.serviceMap.serviceMonitor.enabled }}
{{- if and $on (not $monitoring) }}
{{- fail (printf "%s needs the monitoring.coreos.com/v1 API (the Prometheus Operator's CRDs), which this cluster does not serve; install them first (with helm template: --api-versions monitoring.coreos.com/v1)" $value) }}
{{- end }}
{{- end }}
{{- $policy := .Values.serviceMap.networkPolicy }}
{{- if and $policy.enabled .Values.serviceMap.serviceMonitor.enabled (not $policy.viewFrom) }}
{{- fail "serviceMap.serviceMonitor.enabled with serviceMap.networkPolicy.enabled needs serviceMap.networkPolicy.viewFrom to admit your Prometheus to the http port, e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]" }}
{{- end }}
{{- end }}
