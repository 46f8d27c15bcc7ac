"""The data component: built-in datasets materialised as versioned shards in the artifact store."""
