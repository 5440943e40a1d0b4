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
{{- define "traceprobe.mapEndpoint" -}}
{{ include "traceprobe.serviceMapName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.serviceMap.ingestPort }}
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
{{- end }}
