locals {
  # Kubernetes service account (deploy/access/serviceaccounts.yaml) = Google service account id.
  components = {
    "cdcflow-writer"     = "cdcflow lake writer: writes Parquet to the lake"
    "cdcflow-loader"     = "cdcflow loader: reads the lake, writes bronze"
    "cdcflow-transform"  = "cdcflow transform: reads bronze, writes silver and gold"
    "cdcflow-monitor"    = "cdcflow monitor: reads bronze freshness and the transform's run record"
    "cdcflow-dlq-replay" = "cdcflow DLQ replay: Kafka only"
    "cdcflow-enricher"   = "cdcflow enricher: Kafka only"
  }
  member = { for name, sa in google_service_account.component : name => "serviceAccount:${sa.email}" }
  # The transform's record of its last run, read by the monitor (services/transform/app.py, LAST_RUN_PATH).
  run_record_objects = "projects/_/buckets/${var.lake_bucket}/objects/${var.lake_prefix == "" ? "" : "${var.lake_prefix}/"}_transform/"
  # Who may run BigQuery jobs (queries, loads) in the project; what they may touch is the datasets' grants.
  job_users = concat(
    [local.member["cdcflow-loader"], local.member["cdcflow-transform"], local.member["cdcflow-monitor"]],
    var.analysts,
  )
}

resource "google_service_account" "component" {
  for_each     = local.components
  project      = var.project_id
  account_id   = each.key
  display_name = each.value
}

# Workload Identity: the pod's Kubernetes service account acts as the Google one of the same name.
resource "google_service_account_iam_member" "workload_identity" {
  for_each           = local.components
  service_account_id = google_service_account.component[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${each.key}]"
}

# --- the lake ---------------------------------------------------------------------------------------------

# The writer creates files and overwrites the orphan of a crashed batch (an overwrite deletes the old object).
resource "google_storage_bucket_iam_member" "writer_lake" {
  bucket = var.lake_bucket
  role   = "roles/storage.objectUser"
  member = local.member["cdcflow-writer"]
}

# The loader writes the lake too: its shard lease (_leases/), unreadable files moved to the failed prefix
# (a move deletes the original) and, with ARCHIVE_PREFIX set, loaded files moved to the archive.
resource "google_storage_bucket_iam_member" "loader_lake" {
  bucket = var.lake_bucket
  role   = "roles/storage.objectUser"
  member = local.member["cdcflow-loader"]
}

# The transform reads the contracts the writer publishes (_contracts/) and writes its run record (_transform/).
resource "google_storage_bucket_iam_member" "transform_reads_lake" {
  bucket = var.lake_bucket
  role   = "roles/storage.objectViewer"
  member = local.member["cdcflow-transform"]
}

resource "google_storage_bucket_iam_member" "transform_writes_run_record" {
  bucket = var.lake_bucket
  role   = "roles/storage.objectUser"
  member = local.member["cdcflow-transform"]
  condition {
    title      = "transform-run-record"
    expression = "resource.name.startsWith(\"${local.run_record_objects}\")"
  }
}

# The monitor reads the transform's run record and nothing else of the lake.
resource "google_storage_bucket_iam_member" "monitor_reads_run_record" {
  bucket = var.lake_bucket
  role   = "roles/storage.objectViewer"
  member = local.member["cdcflow-monitor"]
  condition {
    title      = "transform-run-record"
    expression = "resource.name.startsWith(\"${local.run_record_objects}\")"
  }
}

# --- the warehouse ----------------------------------------------------------------------------------------

resource "google_project_iam_member" "bigquery_job_user" {
  for_each = toset(local.job_users)
  project  = var.project_id
  role     = "roles/bigquery.jobUser"
  member   = each.value
}

resource "google_bigquery_dataset_iam_member" "loader_writes_bronze" {
  for_each   = toset([var.datasets.bronze, var.datasets.bronze_staging])
  project    = var.project_id
  dataset_id = each.value
  role       = "roles/bigquery.dataEditor"
  member     = local.member["cdcflow-loader"]
}

resource "google_bigquery_dataset_iam_member" "transform_reads_bronze" {
  project    = var.project_id
  dataset_id = var.datasets.bronze
  role       = "roles/bigquery.dataViewer"
  member     = local.member["cdcflow-transform"]
}

resource "google_bigquery_dataset_iam_member" "transform_writes_silver_and_gold" {
  for_each   = toset([var.datasets.silver, var.datasets.gold])
  project    = var.project_id
  dataset_id = each.value
  role       = "roles/bigquery.dataEditor"
  member     = local.member["cdcflow-transform"]
}

resource "google_bigquery_dataset_iam_member" "monitor_reads_bronze" {
  project    = var.project_id
  dataset_id = var.datasets.bronze
  role       = "roles/bigquery.dataViewer"
  member     = local.member["cdcflow-monitor"]
}

# Analysts read gold only: never bronze or silver, which hold raw change rows (deleted records included).
resource "google_bigquery_dataset_iam_member" "analysts_read_gold" {
  for_each   = toset(var.analysts)
  project    = var.project_id
  dataset_id = var.datasets.gold
  role       = "roles/bigquery.dataViewer"
  member     = each.value
}
