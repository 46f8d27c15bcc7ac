{{/*
Chart name, truncated to 63 characters (the DNS-1123 label limit).
*/}}
{{- define "aprflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: "<release>-<chart>", or the release name when it already contains the
chart name. Truncated to 63 characters.
*/}}
{{- define "aprflow.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "aprflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
*/}}
{{- define "aprflow.labels" -}}
helm.sh/chart: {{ include "aprflow.chart" . }}
{{ include "aprflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aprflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (immutable: never add version-dependent labels here).
*/}}
{{- define "aprflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aprflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels / selector labels of one component. Usage: include "aprflow.componentLabels" (list $ "mlflow")
*/}}
{{- define "aprflow.componentLabels" -}}
{{ include "aprflow.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "aprflow.componentSelectorLabels" -}}
{{ include "aprflow.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Resource names.
*/}}
{{- define "aprflow.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "aprflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aprflow.mlflow.dbUpgrade.fullname" -}}
{{- printf "%s-mlflow-db-upgrade" (include "aprflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aprflow.postgres.fullname" -}}
{{- printf "%s-postgres" (include "aprflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aprflow.upload.fullname" -}}
{{- printf "%s-pipeline-upload" (include "aprflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aprflow.rbac.fullname" -}}
{{- printf "%s-pipeline" (include "aprflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the ServiceAccount of aprflow pipeline pods.
*/}}
{{- define "aprflow.serviceAccountName" -}}
{{- .Values.serviceAccount.name }}
{{- end }}

{{/*
Name of the S3 credentials Secret (existing or created).
*/}}
{{- define "aprflow.s3.secretName" -}}
{{- default .Values.s3.secretName .Values.s3.existingSecret }}
{{- end }}

{{/*
Secret that holds the bundled Postgres password (existing or created).
*/}}
{{- define "aprflow.postgres.secretName" -}}
{{- default (include "aprflow.postgres.fullname" .) .Values.postgres.auth.existingSecret }}
{{- end }}

{{/*
s3://bucket/prefix of the aprflow artifact store (prefix optional).
*/}}
{{- define "aprflow.storeUri" -}}
{{- $prefix := trimAll "/" .Values.s3.prefix }}
{{- if $prefix }}
{{- printf "s3://%s/%s" .Values.s3.bucket $prefix }}
{{- else }}
{{- printf "s3://%s" .Values.s3.bucket }}
{{- end }}
{{- end }}

{{/*
--artifacts-destination of the MLflow server.
*/}}
{{- define "aprflow.mlflow.artifactsDestination" -}}
{{- $sub := trimAll "/" .Values.mlflow.artifactsSubPath }}
{{- if $sub }}
{{- printf "%s/%s" (include "aprflow.storeUri" .) $sub }}
{{- else }}
{{- include "aprflow.storeUri" . }}
{{- end }}
{{- end }}

{{/*
MLFLOW_TRACKING_URI for pipeline pods.
*/}}
{{- define "aprflow.mlflow.trackingUri" -}}
{{- if .Values.launcher.mlflowTrackingUri }}
{{- .Values.launcher.mlflowTrackingUri }}
{{- else if .Values.mlflow.enabled }}
{{- printf "http://%s.%s.svc.cluster.local:%d" (include "aprflow.mlflow.fullname" .) .Release.Namespace (int .Values.mlflow.service.port) }}
{{- else }}
{{- fail "launcher.mlflowTrackingUri is required when mlflow.enabled is false" }}
{{- end }}
{{- end }}

{{/*
Comma-separated Host headers accepted by the MLflow server (--allowed-hosts): the in-cluster
Service names (with or without port), localhost and private IPs, plus mlflow.allowedHosts.
*/}}
{{- define "aprflow.mlflow.allowedHosts" -}}
{{- $svc := include "aprflow.mlflow.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*" $svc (printf "%s:*" $svc) (printf "%s.%s" $svc $ns) (printf "%s.%s:*" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc:*" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) (printf "%s.%s.svc.cluster.local:*" $svc $ns) "10.*" "192.168.*" }}
{{- range $i := until 16 }}
{{- $hosts = append $hosts (printf "172.%d.*" (add 16 $i)) }}
{{- end }}
{{- concat $hosts .Values.mlflow.allowedHosts | join "," }}
{{- end }}

{{/*
Image reference "<repository>:<tag or appVersion>". Usage: include "aprflow.image" (list $ .Values.mlflow.image)
*/}}
{{- define "aprflow.image" -}}
{{- $root := index . 0 }}
{{- $img := index . 1 }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}

{{/*
imagePullSecrets block for pod specs.
*/}}
{{- define "aprflow.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Rules of the aprflow Role (empty when aprflow's code needs no Kubernetes API access).
*/}}
{{- define "aprflow.rbac.rules" -}}
{{- if .Values.trainer.enabled }}
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
{{- end }}
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Fails when the MLflow server could open more Postgres connections than the bundled Postgres
accepts: (replicas + 1 surge pod) x workers x (pool size + overflow) <= max_connections - 10.
*/}}
{{- define "aprflow.mlflow.checkConnections" -}}
{{- if and .Values.mlflow.enabled .Values.postgres.enabled }}
{{- $perWorker := add .Values.mlflow.dbPool.size .Values.mlflow.dbPool.maxOverflow }}
{{- $needed := mul (add .Values.mlflow.replicaCount 1) .Values.mlflow.workers $perWorker }}
{{- $limit := sub .Values.postgres.maxConnections 10 }}
{{- if gt (int $needed) (int $limit) }}
{{- fail (printf "mlflow: (replicaCount %d + 1) x workers %d x (dbPool.size + dbPool.maxOverflow = %d) = %d Postgres connections exceeds postgres.maxConnections %d - 10 reserved: raise postgres.maxConnections or lower the MLflow sizing" (int .Values.mlflow.replicaCount) (int .Values.mlflow.workers) (int $perWorker) (int $needed) (int .Values.postgres.maxConnections)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"s3_secret=NAME launcher_config_map=NAME " for run commands, only for names that differ from
the pipeline parameters' defaults (aprflow-s3, aprflow-launcher).
*/}}
{{- define "aprflow.runNameArgs" -}}
{{- $secret := include "aprflow.s3.secretName" . }}
{{- if ne $secret "aprflow-s3" }}s3_secret={{ $secret }} {{ end }}
{{- if ne .Values.launcher.configMapName "aprflow-launcher" }}launcher_config_map={{ .Values.launcher.configMapName }} {{ end }}
{{- end }}

{{/*
Environment that gives a container MLFLOW_BACKEND_STORE_URI: the bundled Postgres (password from
its Secret, expanded by Kubernetes as $(POSTGRES_PASSWORD), so it comes first) or the external
database's Secret. Shared by the MLflow server and its schema migration Job.
*/}}
{{- define "aprflow.mlflow.backendStoreEnv" -}}
{{- if .Values.postgres.enabled -}}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "aprflow.postgres.secretName" . }}
      key: password
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s.%s.svc.cluster.local:%d/%s" .Values.postgres.auth.username (include "aprflow.postgres.fullname" .) .Release.Namespace (int .Values.postgres.service.port) .Values.postgres.auth.database | quote }}
{{- else if .Values.externalDatabase.existingSecret -}}
- name: MLFLOW_BACKEND_STORE_URI
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalDatabase.existingSecret }}
      key: {{ .Values.externalDatabase.uriKey }}
{{- else }}
{{- fail "externalDatabase.existingSecret is required when postgres.enabled is false" }}
{{- end }}
{{- end }}

{{/*
nodeSelector, tolerations and affinity of a pod spec. Usage: include "aprflow.podPlacement" .Values.mlflow
*/}}
{{- define "aprflow.podPlacement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Istio sidecar injection label of every pod template of the chart (the label, not the deprecated
annotation: istio/api label/labels.yaml and annotation/annotations.yaml, `sidecar.istio.io/inject`).
*/}}
{{- define "aprflow.istio.podLabels" -}}
sidecar.istio.io/inject: {{ .Values.istio.sidecarInject | toString | quote }}
{{- end }}

{{/*
Pod annotations of the chart's Jobs. An injected sidecar container never exits, so the Job would
never complete; as a Kubernetes native sidecar (an init container with restartPolicy Always,
istio/api annotation/annotations.yaml `sidecar.istio.io/nativeSidecar`, Istio >= 1.24) it is
stopped when the Job's container exits.
*/}}
{{- define "aprflow.istio.jobPodAnnotations" -}}
{{- if .Values.istio.sidecarInject -}}
sidecar.istio.io/nativeSidecar: "true"
{{- end }}
{{- end }}
