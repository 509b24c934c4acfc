"""nnUNetv2_ssl_import: two folders of paired volumes -> an nnU-Net raw dataset (integration/raw_import.py)."""
import argparse

from nnunet_ssl.cli import run_cli


def import_entry() -> None:
    from nnunet_ssl.integration.raw_import import ImportSpec, import_paired_folders
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_ssl_import",
        description="Make an nnU-Net raw dataset from a folder of images and a folder of labels with the same "
                    "file names (e.g. shared/datasets/acdc_train70). Checks every pair first; never changes an "
                    "existing dataset.")
    parser.add_argument("-i", dest="images", required=True, help="folder of images, one channel per file")
    parser.add_argument("-l", dest="label_folder", required=True, help="folder of label volumes, same names as -i")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="new dataset id (1-999)")
    parser.add_argument("-n", dest="name", required=True, help="dataset name, e.g. ACDC -> Dataset027_ACDC")
    parser.add_argument("--channel", required=True,
                        help="channel name; nnU-Net normalises 'CT' by CT statistics, anything else by z-score")
    parser.add_argument("--labels", dest="label_names", nargs="+", required=True, metavar="NAME",
                        help="label names by value, background first, e.g. background RV MYO LV")
    args = parser.parse_args()
    spec = ImportSpec(args.images, args.label_folder, args.dataset_id, args.name, args.channel,
                       tuple(args.label_names))
    run_cli(lambda: print(f"wrote {import_paired_folders(spec)}\nnext: nnUNetv2_plan_and_preprocess "
                          f"-d {args.dataset_id} -c 2d 3d_fullres"))
