# Data stages: corpus -> shards -> samples -> inspect. One `python -m bigs.data.<stage>`
# per rule; params hold exactly the settings that shape each rule's outputs, so a changed
# setting reruns its stage and what follows, nothing before it.


# Downloads go to a stage dir Snakemake does not own (it deletes a failed job's output dir), so a
# rerun after a failure or a kill fetches only the missing files; the output is hard-linked from it.
rule fetch_prebuilt:
    input:
        fetch_manifest(),
    output:
        directory("resources/prebuilt/{corpus}"),
    log:
        "logs/fetch_prebuilt/{corpus}.log",
    conda:
        "../envs/data.yaml"
    threads: 4
    resources:
        runtime=720,
    params:
        what=fetch_source_args(),
        stage=lambda wildcards: f"resources/prebuilt/.stage/{wildcards.corpus}",
    shell:
        "python -m bigs.data.fetch {params.what} --output {output:q} --stage {params.stage:q}"
        " --jobs {threads} > {log:q} 2>&1"


# A raw source given by URL (a Wikipedia dump), verified against its md5 (given, or from the dump's
# md5sums file): a dry run on a fresh clone shows it, the data stages follow.
rule fetch_raw:
    output:
        "resources/raw/{corpus}/{source}/{file}",
    log:
        "logs/fetch_raw/{corpus}/{source}/{file}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        runtime=720,
    params:
        url=raw_url,
        checksum=raw_checksum,
    shell:
        "python -m bigs.data.fetch --raw_url {params.url:q} {params.checksum} --output {output:q} > {log:q} 2>&1"


# One job per raw source (corpus.raw.sources), sharded together below.
rule process_corpus:
    input:
        raw_input,
    output:
        "results/corpus/{corpus}/{source}/{type}_one_article_per_line.txt",
    log:
        "logs/process_corpus/{corpus}-{source}-{type}.log",
    conda:
        "../envs/data.yaml"
    threads: 8
    resources:
        runtime=720,
    params:
        outdir=subpath(output[0], parent=True),
    shell:
        "python -m bigs.data.process -f {input:q} -o {params.outdir:q} --type {wildcards.type}"
        " --n_processes {threads} > {log:q} 2>&1"


rule shard_corpus:
    input:
        corpus_texts(),
    output:
        text_shards("{corpus}"),
    log:
        "logs/shard_corpus/{corpus}.log",
    conda:
        "../envs/data.yaml"
    threads: 8
    resources:
        runtime=720,
    params:
        txt_dirs=lambda wildcards, input: [os.path.dirname(f) for f in input],
        out_dir=lambda wildcards: f"results/shards/{wildcards.corpus}",
        num_train_shards=config["shards"]["num_train_shards"],
        num_test_shards=config["shards"]["num_test_shards"],
        frac_test=config["shards"]["frac_test"],
        seed=config["shards"]["seed"],
    shell:
        "python -m bigs.data.shard --dir {params.txt_dirs:q} -o {params.out_dir:q}"
        " --num_train_shards {params.num_train_shards} --num_test_shards {params.num_test_shards}"
        " --frac_test {params.frac_test} --seed {params.seed} --n_processes {threads} --overwrite"
        " > {log:q} 2>&1"


# WordPiece once per text shard (tokenizing is the slow part); the masked copies below all reuse these ids.
rule tokenize_shard:
    input:
        "results/shards/{corpus}/{textshard}.txt",
    output:
        "results/tokens/{corpus}/{textshard}.npz",
    log:
        "logs/tokenize_shard/{corpus}/{textshard}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        vocab=vocab_args(),
        model_name=config["samples"]["model_name"],
        do_lower_case=int(config["samples"]["do_lower_case"]),
    shell:
        "python -m bigs.data.samples tokenize --input {input:q} --output {output:q} {params.vocab}"
        " --model_name {params.model_name:q} --do_lower_case {params.do_lower_case} > {log:q} 2>&1"


# One job per (sample set x text shard x dup copy): hdf5 shard k = output_index(shard, copy, num_shards).
# Every sample set of the corpus masks the same token files, at its own length.
rule mask_shard:
    input:
        sample_tokens,
    output:
        "results/samples/{dataset}/{split}_shard_{k}.hdf5",
    log:
        "logs/mask_shard/{dataset}/{split}_shard_{k}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        args=mask_args,
    shell:
        "python -m bigs.data.samples mask --tokens {input:q} --output {output:q} {params.args} > {log:q} 2>&1"


rule inspect_dataset:
    input:
        dataset_set_inputs,
    output:
        report(
            "results/inspect/{dataset}.json",
            category="Data",
            labels={"file": "shard stats"},
        ),
    log:
        "logs/inspect_dataset/{dataset}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        path=lambda wildcards, input: dataset_arg(input),
    shell:
        "python -m bigs.data.inspect {params.path:q} -o {output:q} > {log:q} 2>&1"
