{{/*
The alert rules (the PrometheusRule's spec.groups). Each alert's runbook is a paragraph of the
chart's README under "Alerts"; tests/unit/test_chart_alerts.py runs promtool over them.
Series: the operator's per-ModelService gauges (labels namespace, modelservice), TF Serving's
request metrics (namespace, model_service, track from the PodMonitor), kube-state-metrics'
HPA metrics.
*/}}
{{- define "tfmaas.alertGroups" -}}
{{- $pr := .Values.monitoring.prometheusRule }}
{{- $severity := $pr.severity }}
{{- /* Server-side failures only: a client's bad input or unknown version is not the model's fault. */}}
{{- $errors := `status!~"OK|INVALID_ARGUMENT|NOT_FOUND|FAILED_PRECONDITION|UNAUTHENTICATED|PERMISSION_DENIED"` }}
- name: tfmaas.modelservices
  rules:
    - alert: TfmaasModelServiceNotReady
      expr: max by (namespace, modelservice) (tfmaas_modelservice_ready) == 0
      for: {{ $pr.notReadyFor }}
      labels: {severity: {{ $severity }}}
      annotations:
        summary: "ModelService {{`{{ $labels.namespace }}/{{ $labels.modelservice }}`}} is not Ready"
        description: "Its Ready condition has not been True for {{ $pr.notReadyFor }}; `kubectl describe modelservice` says why."
        runbook: charts/tfmaas/README.md#tfmaasmodelservicenotready
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaasmodelservicenotready
        {{- end }}
    - alert: TfmaasTrainingFailed
      expr: max by (namespace, modelservice) (tfmaas_modelservice_training_failed) == 1
      labels: {severity: {{ $severity }}}
      annotations:
        summary: "Training of the newest version of {{`{{ $labels.namespace }}/{{ $labels.modelservice }}`}} failed"
        description: "The version served before keeps serving; the Trained condition names the cause."
        runbook: charts/tfmaas/README.md#tfmaastrainingfailed
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaastrainingfailed
        {{- end }}
    - alert: TfmaasVersionBelowQualityGate
      expr: max by (namespace, modelservice) (tfmaas_modelservice_below_quality_gate) == 1
      labels: {severity: {{ $severity }}}
      annotations:
        summary: "The newest version of {{`{{ $labels.namespace }}/{{ $labels.modelservice }}`}} did not pass its quality gate"
        description: "It is kept but not served; the QualityGatePassed condition gives its scores."
        runbook: charts/tfmaas/README.md#tfmaasversionbelowqualitygate
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaasversionbelowqualitygate
        {{- end }}
- name: tfmaas.serving
  rules:
    - alert: TfmaasServingErrorRatioHigh
      expr: |
        sum by (namespace, model_service) (rate(:tensorflow:serving:request_count{ {{- $errors -}} }[5m]))
          / sum by (namespace, model_service) (rate(:tensorflow:serving:request_count[5m]))
          > {{ $pr.errorRatio }}
      for: {{ $pr.errorRatioFor }}
      labels: {severity: {{ $severity }}}
      annotations:
        summary: "{{`{{ $value | humanizePercentage }}`}} of requests to {{`{{ $labels.namespace }}/{{ $labels.model_service }}`}} fail"
        description: "Server-side errors above {{ $pr.errorRatio }} of all requests for {{ $pr.errorRatioFor }}."
        runbook: charts/tfmaas/README.md#tfmaasservingerrorratiohigh
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaasservingerrorratiohigh
        {{- end }}
    - alert: TfmaasServingLatencyHigh
      # TF Serving measures latency in microseconds.
      expr: |
        histogram_quantile(0.99, sum by (namespace, model_service, le) (rate(:tensorflow:serving:request_latency_bucket[5m])))
          > {{ mulf $pr.p99LatencySeconds 1000000 }}
      for: {{ $pr.latencyFor }}
      labels: {severity: {{ $severity }}}
      annotations:
        summary: "p99 latency of {{`{{ $labels.namespace }}/{{ $labels.model_service }}`}} is {{`{{ $value | humanize }}`}}µs"
        description: "Above {{ $pr.p99LatencySeconds }} s for {{ $pr.latencyFor }}."
        runbook: charts/tfmaas/README.md#tfmaasservinglatencyhigh
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaasservinglatencyhigh
        {{- end }}
    - alert: TfmaasAutoscalerAtMaxReplicas
      expr: |
        max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas)
          >= max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_max_replicas)
        and on (namespace, horizontalpodautoscaler)
          label_replace(max by (namespace, modelservice) (tfmaas_modelservice_ready), "horizontalpodautoscaler", "$1", "modelservice", "(.+)")
      for: {{ $pr.maxReplicasFor }}
      labels: {severity: {{ $severity }}}
      annotations:
        summary: "The autoscaler of {{`{{ $labels.namespace }}/{{ $labels.horizontalpodautoscaler }}`}} is pinned at maxReplicas"
        description: "Demand may exceed what spec.serving.autoscaling.maxReplicas allows."
        runbook: charts/tfmaas/README.md#tfmaasautoscaleratmaxreplicas
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaasautoscaleratmaxreplicas
        {{- end }}
    - alert: TfmaasRequestRateMissing
      expr: |
        max by (namespace, modelservice) (tfmaas_modelservice_ready) == 1
        unless on (namespace, modelservice)
          label_replace(sum by (namespace, model_service) (rate(:tensorflow:serving:request_count[5m])), "modelservice", "$1", "model_service", "(.+)")
      for: {{ $pr.requestRateMissingFor }}
      labels: {severity: {{ $severity }}}
      annotations:
        summary: "No request metrics from {{`{{ $labels.namespace }}/{{ $labels.modelservice }}`}}; its autoscaler is blind"
        description: "A Ready ModelService's serving pods exported no request counter for {{ $pr.requestRateMissingFor }}."
        runbook: charts/tfmaas/README.md#tfmaasrequestratemissing
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaasrequestratemissing
        {{- end }}
- name: tfmaas.operator
  rules:
    - alert: TfmaasOperatorReconcileErrors
      expr: sum by (namespace, pod) (rate(tfmaas_operator_reconciles_total{result=~"error|transient"}[5m])) > 0
      for: {{ $pr.reconcileErrorsFor }}
      labels: {severity: warning}
      annotations:
        summary: "The tfmaas operator's reconciles keep failing"
        description: "Reconciles ending in API errors for {{ $pr.reconcileErrorsFor }}; the operator's log names the ModelServices."
        runbook: charts/tfmaas/README.md#tfmaasoperatorreconcileerrors
        {{- with $pr.runbookBaseUrl }}
        runbook_url: {{ . }}#tfmaasoperatorreconcileerrors
        {{- end }}
{{- end }}
