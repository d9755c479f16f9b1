{{/* The release's full name, a DNS label. */}}
{{- define "agentflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agentflow.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: pass (dict "root" $ "component" "control-plane"). */}}
{{- define "agentflow.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "agentflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agentflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "agentflow.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.repository .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* What every process reads: NATS, logs, traces. Pass (dict "root" $ "who" "controlPlane"|"worker"). */}}
{{- define "agentflow.commonEnv" -}}
- name: AF_NATS_URL
  value: {{ .root.Values.nats.url | quote }}
{{- if .root.Values.nats.auth.enabled }}
- name: AF_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.nats.auth.existingSecret }}
      key: {{ index .root.Values.nats.auth (printf "%sUserKey" .who) }}
- name: AF_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.nats.auth.existingSecret }}
      key: {{ index .root.Values.nats.auth (printf "%sPasswordKey" .who) }}
{{- end }}
- name: AF_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: AF_LOG_FORMAT
  value: {{ .root.Values.logFormat | quote }}
{{- with .root.Values.otlpEndpoint }}
- name: AF_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "agentflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Where NATS is, as NetworkPolicy peers: its ipBlocks, else its pods. */}}
{{- define "agentflow.natsPeer" -}}
{{- if .ipBlocks }}
{{- range .ipBlocks }}
- ipBlock: {cidr: {{ . | quote }}}
{{- end }}
{{- else }}
- podSelector:
    matchLabels:
      {{- toYaml .podSelector | nindent 6 }}
  namespaceSelector:
    {{- if .namespaceSelector }}
    matchLabels:
      {{- toYaml .namespaceSelector | nindent 6 }}
    {{- else }}
    {}
    {{- end }}
{{- end }}
{{- end }}
{{- define "agentflow.dnsEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
