# Podium's R package restore, run by the execution environment's R as a build job:
#
#   R --no-echo --no-restore --no-save --file=restore.R --args <library> <packages.dcf> <repository>
#
# <packages.dcf> lists what the bundle asks for, one record per package (Package,
# Version, Source). A package the environment's own library provides at that version
# or newer is used from there. Every other one is installed into <library> from the
# CRAN-like <repository>: the listed version (the current one, or
# src/contrib/Archive/<pkg>/<pkg>_<version>.tar.gz), else a newer current one.
# Its dependencies come from the repository too unless the environment has them.
# Everything printed is the build log; the exit status is 1 when a package is missing.
# Base R only: the environment may have nothing else.

args <- commandArgs(trailingOnly = TRUE)
lib <- normalizePath(args[[1]], mustWork = TRUE)
wanted <- read.dcf(args[[2]], fields = c("Package", "Version", "Source"))
repo <- sub("/+$", "", args[[3]])
options(repos = c(CRAN = repo), warn = 1, timeout = max(300, getOption("timeout")))
environment_libs <- setdiff(normalizePath(.libPaths(), mustWork = FALSE), lib)
cat(sprintf("R %s; the environment's libraries: %s\n",
            format(getRversion()), paste(environment_libs, collapse = ", ")))

installed_version <- function(pkg, libs) {
  for (l in libs) {
    description <- file.path(l, pkg, "DESCRIPTION")
    if (file.exists(description)) {
      return(package_version(read.dcf(description, "Version")[1, 1]))
    }
  }
  NULL
}

satisfies <- function(have, want) {
  !is.null(have) && (is.na(want) || have >= package_version(want))
}

fail <- function(lines) {
  cat("podium: the R packages cannot be restored:\n")
  cat(paste0("  ", lines, "\n"), sep = "")
  quit(save = "no", status = 1)
}

needed <- integer(0)
for (i in seq_len(nrow(wanted))) {
  pkg <- wanted[i, "Package"]
  want <- wanted[i, "Version"]
  have <- installed_version(pkg, environment_libs)
  if (satisfies(have, want)) {
    cat(sprintf("%s %s: the environment has %s\n", pkg, want, format(have)))
  } else {
    needed <- c(needed, i)
  }
}
if (length(needed) == 0) {
  cat("Nothing to install: the environment provides every package.\n")
  quit(save = "no", status = 0)
}

unreachable <- function(why) {
  fail(sprintf(paste0(
    "cannot read the R package repository %s (setting r_repository_url): %s. ",
    "Check the URL, and that this host reaches it (a proxy goes in https_proxy)."), repo, why))
}
index_warnings <- character(0)
available <- tryCatch(
  withCallingHandlers(
    available.packages(repos = repo, type = "source"),
    warning = function(w) {
      index_warnings <<- c(index_warnings, gsub("\\s+", " ", conditionMessage(w)))
      invokeRestart("muffleWarning")
    }
  ),
  error = function(e) unreachable(conditionMessage(e))
)
# An unreachable repository is a warning and an empty index, not an error.
if (nrow(available) == 0 && length(index_warnings)) unreachable(paste(index_warnings, collapse = "; "))
from_repository <- character(0)
archived <- character(0)
problems <- character(0)
for (i in needed) {
  pkg <- wanted[i, "Package"]
  want <- wanted[i, "Version"]
  source <- wanted[i, "Source"]
  current <- if (pkg %in% rownames(available)) available[pkg, "Version"] else NA
  if (!is.na(current) && (is.na(want) || package_version(current) == package_version(want))) {
    cat(sprintf("%s %s: installing from %s\n", pkg, current, repo))
    from_repository <- c(from_repository, pkg)
    next
  }
  tarball <- file.path(tempdir(), sprintf("%s_%s.tar.gz", pkg, want))
  url <- sprintf("%s/src/contrib/Archive/%s/%s_%s.tar.gz", repo, pkg, pkg, want)
  fetched <- tryCatch(
    suppressWarnings(download.file(url, tarball, quiet = TRUE)) == 0,
    error = function(e) FALSE
  )
  if (isTRUE(fetched)) {
    cat(sprintf("%s %s: installing from %s\n", pkg, want, url))
    archived <- c(archived, tarball)
  } else if (!is.na(current) && package_version(current) > package_version(want)) {
    cat(sprintf("%s %s: not in the repository's archive; installing the newer %s from %s\n",
                pkg, want, current, repo))
    from_repository <- c(from_repository, pkg)
  } else {
    has <- if (is.na(current)) "no such package" else sprintf("only version %s", current)
    have <- installed_version(pkg, environment_libs)
    env_has <- if (is.null(have)) "no such package" else sprintf("only version %s", format(have))
    problems <- c(problems, sprintf(
      "%s %s (Source: %s): the environment's library has %s and the repository %s has %s",
      pkg, want, if (is.na(source)) "unknown" else source, env_has, repo, has))
  }
}
if (length(problems)) fail(problems)

.libPaths(c(lib, .libPaths()))
if (length(from_repository)) {
  install.packages(from_repository, lib = lib, repos = repo, type = "source",
                   dependencies = c("Depends", "Imports", "LinkingTo"))
}
for (tarball in archived) {
  install.packages(tarball, lib = lib, repos = NULL, type = "source")
}

missing <- character(0)
for (i in needed) {
  pkg <- wanted[i, "Package"]
  want <- wanted[i, "Version"]
  have <- installed_version(pkg, c(lib, environment_libs))
  if (is.null(have)) {
    missing <- c(missing, sprintf("%s %s: its installation failed (see the lines above)", pkg, want))
  }
}
if (length(missing)) fail(missing)
cat(sprintf("Installed %d R package(s) into %s.\n", length(needed), lib))
