"""Data: where a dataset's atomic files are found (:mod:`.location`), their checks
(:mod:`.validate`) and the KGAT/KGIN text-format converter (:mod:`.convert`)."""
