variable "project_id" {
  description = "The project that runs the GKE cluster, holds the lake bucket and the BigQuery datasets."
  type        = string
}

variable "namespace" {
  description = "The Kubernetes namespace of the gke overlay (deploy/k8s/overlays/gke)."
  type        = string
  default     = "cdcflow"
}

variable "lake_bucket" {
  description = "The GCS bucket of CDCFLOW_LAKE__ROOT (gs://<bucket>/<prefix>)."
  type        = string
}

variable "lake_prefix" {
  description = "The <prefix> of CDCFLOW_LAKE__ROOT (gs://<bucket>/<prefix>), without slashes; empty for the bucket root."
  type        = string
  default     = "lake"
}
variable "datasets" {
  description = "The BigQuery datasets of each layer (CDCFLOW_WAREHOUSE__BIGQUERY_*_DATASET, dbt's silver and gold)."
  type = object({
    bronze         = string
    bronze_staging = string
    silver         = string
    gold           = string
  })
  default = {
    bronze         = "bronze"
    bronze_staging = "bronze_staging"
    silver         = "silver"
    gold           = "gold"
  }
}

variable "analysts" {
  description = "Members who read gold and nothing else, e.g. [\"group:analysts@example.com\"]."
  type        = list(string)
  default     = []
}
