{{- define "member.sa" -}}
{{- default "skybridge-member" .Values.serviceAccount.name }}
{{- end }}
{{- define "member.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: skybridge-member
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: skybridge
{{- end }}
