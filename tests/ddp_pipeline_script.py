"""Run by tests/test_run_folder.py: experiments/run_pipeline.py's main(), as a user runs it, then the gloo teardown
of tests/ddp_exit.py. Lightning starts rank 1 by running this script again (sys.argv, with LOCAL_RANK=1); that rank
then runs the pipeline's loop too. (Not runpy.run_path: it sets sys.argv[0] to run_pipeline.py, and rank 1 would then
skip this teardown.)"""
import importlib.util

if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("run_pipeline", "experiments/run_pipeline.py")
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)
    command.main()  # reads sys.argv[1:]

    import torch.distributed as dist  # after dsls (it warns when torch comes first)

    if dist.is_initialized():  # see ddp_exit.destroy_process_group: a gloo group left to exit can abort
        dist.barrier()
        dist.destroy_process_group()
