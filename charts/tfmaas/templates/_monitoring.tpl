{{/*
The prometheus-adapter rule that turns TF Serving's request counter into the per-pod rate
the serving HPAs target. files/prometheus-adapter-values.yaml holds the same rule rendered
with the default values, for the prometheus-adapter chart; a test keeps them equal.
*/}}
{{- define "tfmaas.adapterRules" -}}
- seriesQuery: ':tensorflow:serving:request_count{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      pod: {resource: pod}
  name:
    matches: ^:tensorflow:serving:request_count$
    as: {{ .Values.monitoring.requestRateMetric }}
  metricsQuery: sum by (<<.GroupBy>>) (rate(<<.Series>>{<<.LabelMatchers>>}[{{ .Values.monitoring.rateWindow }}]))
{{- end }}

{{/* Labels the operator puts on every serving pod. */}}
{{- define "tfmaas.servingPodSelector" -}}
matchLabels:
  app.kubernetes.io/component: serving
  app.kubernetes.io/part-of: tfmaas
matchExpressions:
  - key: tfmaas.io/model-service
    operator: Exists
{{- end }}

{{/* namespaceSelector for the monitors: the watched namespaces, or any. */}}
{{- define "tfmaas.monitorNamespaceSelector" -}}
{{- $watch := include "tfmaas.watchNamespaces" . | fromJsonArray }}
{{- if $watch }}
matchNames:
  {{- toYaml $watch | nindent 2 }}
{{- else }}
any: true
{{- end }}
{{- end }}

{{/* The pod labels every serving series carries, under the dashboard's names. */}}
{{- define "tfmaas.podMonitorRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_tfmaas_io_model_service]
  targetLabel: model_service
- sourceLabels: [__meta_kubernetes_pod_label_tfmaas_io_version]
  targetLabel: model_version
- sourceLabels: [__meta_kubernetes_pod_label_tfmaas_io_track]
  targetLabel: track
{{- end }}
