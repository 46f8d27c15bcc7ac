"""The pipelines aprflow ships, by the name used on the command line and in compiled/."""

from pipelines.apr_study import apr_study
from pipelines.transfer_study import transfer_study

PIPELINES = {"apr-study": apr_study, "transfer-study": transfer_study}
