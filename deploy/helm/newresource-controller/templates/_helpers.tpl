{{/*
The chart name, or nameOverride. It is the value of the `app.kubernetes.io/name` label, which
selects the pods (as in deploy/base), so it must stay the same across upgrades.
*/}}
{{- define "newresource-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The base name of the objects: fullnameOverride, else the release name when it already contains
the chart name (release `newresource-controller` gives the names of deploy/base), else
`<release>-<chart name>`. Truncated to 63 characters, the limit of a DNS label.
*/}}
{{- define "newresource-controller.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* `<chart>-<version>`, the value of the helm.sh/chart label. */}}
{{- define "newresource-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The pods' selector: the Deployment's selector and pod template, the Service, the
PodDisruptionBudget and the topology spread constraints all use exactly this, as deploy/base
does, so that an installation can move between kustomize and Helm.
*/}}
{{- define "newresource-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "newresource-controller.name" . }}
{{- end -}}

{{/* The labels deploy/base puts on its objects (and on the pod template). */}}
{{- define "newresource-controller.baseLabels" -}}
{{ include "newresource-controller.selectorLabels" . }}
app.kubernetes.io/part-of: newresource
{{- end -}}

{{/* Helm's standard labels, on object metadata only (never in a selector). */}}
{{- define "newresource-controller.helmLabels" -}}
helm.sh/chart: {{ include "newresource-controller.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The labels of every object but the CRD. */}}
{{- define "newresource-controller.labels" -}}
{{ include "newresource-controller.baseLabels" . }}
{{ include "newresource-controller.helmLabels" . }}
{{- end -}}

{{/* The pods' ServiceAccount. */}}
{{- define "newresource-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "newresource-controller.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Lease: its name (`--lease-name`, the Role's resourceNames) and namespace. */}}
{{- define "newresource-controller.leaseName" -}}
{{- default (include "newresource-controller.fullname" .) .Values.lease.name -}}
{{- end -}}

{{- define "newresource-controller.leaseNamespace" -}}
{{- default .Release.Namespace .Values.lease.namespace -}}
{{- end -}}

{{/* `repository:tag` of an image value; an empty tag means the chart's appVersion. */}}
{{- define "newresource-controller.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* The controller container's image value, by controller.implementation. */}}
{{- define "newresource-controller.controllerImage" -}}
{{- $impl := .Values.controller.implementation -}}
{{- if eq $impl "python" -}}
{{- include "newresource-controller.image" (list .Values.controller.pythonImage .) -}}
{{- else if eq $impl "go" -}}
{{- include "newresource-controller.image" (list .Values.controller.goImage .) -}}
{{- else if eq $impl "rust" -}}
{{- include "newresource-controller.image" (list .Values.controller.image .) -}}
{{- else -}}
{{- fail (printf "controller.implementation must be rust, python or go, not %q" $impl) -}}
{{- end -}}
{{- end -}}

{{- define "newresource-controller.controllerPullPolicy" -}}
{{- if eq .Values.controller.implementation "python" -}}
{{- .Values.controller.pythonImage.pullPolicy -}}
{{- else if eq .Values.controller.implementation "go" -}}
{{- .Values.controller.goImage.pullPolicy -}}
{{- else -}}
{{- .Values.controller.image.pullPolicy -}}
{{- end -}}
{{- end -}}
