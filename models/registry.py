"""Model name -> what it is, what it needs, and how to build it.

    pipe = registry.load("atvgnet")                       # pipeline, weights from ./weights
    net = registry.load_network("atvgnet", "vgnet", "generator_23.pth")

A system is one folder under ``models/`` and one ``ModelSpec`` here (or one ``register``
call, for a plug-in): its pipeline class declares what it takes and its options, its
``commands`` module the ``talkingface`` subcommands it adds (data, train, eval, demo
weights, bench). ``service/`` reads both and names no model.
"""

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from models import weights as weights_lib
from models.common.quantize import InvalidPrecision, check_precision
from models.errors import UnknownModel
from models.weights import WeightFile

ATVGNET_SOURCE = ("the authors' Google Drive folder linked from the README of "
                  "github.com/lelechen63/ATVGnet (section Running)")
ATVGNET_BASICS = "the basics/ folder of github.com/lelechen63/ATVGnet"
ATVGNET_LICENCE = "no licence stated by the authors; research use"
DAVS_SOURCE = ("the Google Drive link in the README of "
               "github.com/Hangz-nju-cuhk/Talking-Face-Generation-DAVS")
DAVS_LICENCE = "non-commercial research and educational use only (authors' LICENSE)"
DAVS_CHECKPOINT = "101_DAVS_checkpoint.pth.tar"
# Where `talkingface weights download` fetches the authors' files (weights/README.md):
# the checkpoints' Drive folder as the authors' README links it now, then its earlier link;
# the arrays from the repository; the DAVS checkpoint's Drive link.
ATVGNET_DRIVE = ("https://drive.google.com/drive/folders/1McjJsKS_yrgEZeB1fb-Og-N2gf2PQMF6",
                 "https://drive.google.com/drive/folders/1WYhqKBFX6mLtdJ8sYVLdWUqp5FJDmphg")
ATVGNET_BASICS_URL = "https://raw.githubusercontent.com/lelechen63/ATVGnet/master/basics/"
DAVS_DRIVE = ("https://drive.google.com/open?id=1UW22xm4r9AewNoySyPd2fyUab0nqymBR",)
PG2_SOURCE = ("the Google Drive file (weights.zip) linked from the README of github.com/budui/Human-Pose-Transfer "
              "(section Pre-trained model)")
PG2_LICENCE = "MIT (the PyTorch port's LICENSE); trained on Market-1501, whose images are for research use"
PG2_DRIVE = ("https://drive.google.com/open?id=1BCT4cF07Cq0EM62-Re6S56aTs_cc2280",)
EDN_SOURCE = ("no weights are released: a target person is trained on a video of them (talkingface train edn, "
              "POST /v1/motion-targets, or the authors' train_fullts.py of github.com/carolineec/EverybodyDanceNow)")
GRAN_SOURCE = ("the Dropbox folder linked from the README of github.com/jiwoongim/GRAN (section How to obtain "
               "samples with pretrained models); convert with talkingface weights convert --model gran FILE --out DIR")
GRAN_LICENCE = "the authors' notice in their code: copy, use, modify or distribute with the notice kept; research use"
GRAN_DROPBOX = ("https://www.dropbox.com/sh/1jek1alxyjhcnjh/AADOWgtWOWF-LYEuMekxe2yWa?dl=0",)
SSGAN_SOURCE = ("the authors' Dropbox folder (ssgan_models) linked from the README of github.com/xiaolonw/ss-gan "
                "(section Models and Datasets)")
SSGAN_LICENCE = "no licence stated by the authors; research use (trained on NYUv2)"
SSGAN_CODEBOOK_URL = "https://raw.githubusercontent.com/xiaolonw/ss-gan/master/style-gan-fcn/codebook_40.txt"
STACKGAN_V1_SOURCE = ("the Google Drive link (StackGAN for coco) in the README of "
                      "github.com/hanzhanggit/StackGAN-Pytorch")
STACKGAN_V2_SOURCE = "the Google Drive links (Pretrained Model) in the README of github.com/hanzhanggit/StackGAN-v2"
STACKGAN_LICENCE = "MIT (the authors' LICENSE)"
NO_RELEASE = "no weights are released: train them (talkingface train {name} --images DIR) or use the demo weights"
DEMO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "demo"


def basics_sources(name):
    """``WeightFile`` sources of one array of the ``basics/`` folder of the ATVGnet repository."""
    return {"urls": (ATVGNET_BASICS_URL + name,), "aliases": ("basics/" + name,)}


@dataclass(frozen=True)
class NetworkSpec:
    cls: str            # "module:Class"
    checkpoint: str | None = None   # released file name, None when none is published
    checkpoint_key: str | None = None   # entry of a file holding several networks' state dicts


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    paper: str
    pipeline: object                  # "module:Class" (or the class) with from_pretrained(directory, device)
    networks: dict = field(default_factory=dict)
    files: tuple = ()
    demo: Path | None = None          # folder of the demo weights the project ships
    commands: str | None = None       # module with COMMANDS: the system's `talkingface` subcommands


REGISTRY = {
    "atvgnet": ModelSpec(
        name="atvgnet",
        task="talking-face",
        paper="Chen et al., Hierarchical Cross-Modal Talking Face Generation with Dynamic "
              "Pixel-Wise Loss, CVPR 2019",
        pipeline="models.atvgnet.pipeline:ATVGnetPipeline",
        demo=DEMO_WEIGHTS / "atvgnet",
        commands="models.atvgnet.commands",
        networks={
            "atnet": NetworkSpec("models.atvgnet.networks:ATNet", "atnet_lstm_18.pth"),
            "vgnet": NetworkSpec("models.atvgnet.networks:VGNet", "generator_23.pth"),
            "discriminator": NetworkSpec("models.atvgnet.networks:GLDiscriminator"),
        },
        files=(
            WeightFile("atnet_lstm_18.pth", "AT-net checkpoint (LSTM, LRW)", ATVGNET_SOURCE,
                       licence=ATVGNET_LICENCE, urls=ATVGNET_DRIVE, aliases=("model/atnet_lstm_18.pth",)),
            WeightFile("generator_23.pth", "VG-net checkpoint (LRW)", ATVGNET_SOURCE,
                       licence=ATVGNET_LICENCE, urls=ATVGNET_DRIVE, aliases=("model/generator_23.pth",)),
            WeightFile("U_lrw1.npy", "landmark PCA basis (LRW)", ATVGNET_BASICS,
                       "bad092cf68bfde439aca0ded470ec7f7571e41ac782eea16646d13ef875b5c7f", ATVGNET_LICENCE,
                       **basics_sources("U_lrw1.npy")),
            WeightFile("mean_lrw1.npy", "landmark PCA mean (LRW)", ATVGNET_BASICS,
                       "58111c6df75c2145e36fa329724c8eee8f78fcb8a1c7ceae26f5dd2e99733ccb", ATVGNET_LICENCE,
                       **basics_sources("mean_lrw1.npy")),
            WeightFile("S.npy", "shape basis of the landmark normalisation", ATVGNET_BASICS,
                       "2695fd14fcb9bc6960eeca020b1ae1cfd62e7a32e2f643510b4756fc5975ef12", ATVGNET_LICENCE,
                       **basics_sources("S.npy")),
            WeightFile("mean_shape_img.npy", "Procrustes template", ATVGNET_BASICS,
                       "57a165b63c90db0b531a3759413cf23655a4457b18b406c6cf7ce448f41e5102", ATVGNET_LICENCE,
                       **basics_sources("mean_shape_img.npy")),
            WeightFile("mean_shape_norm.npy", "normalised mean shape", ATVGNET_BASICS,
                       "d27792388317f9de88e55f8f5c6375a809b23e7c1d13e112d1e99a017de7039c", ATVGNET_LICENCE,
                       **basics_sources("mean_shape_norm.npy")),
            WeightFile("base_68.npy", "face-crop template (eyes open)", ATVGNET_BASICS,
                       "27cb7ce63fec6bc3c2a9723f4c184d004bddea1e6d683462ca01f687297167bc", ATVGNET_LICENCE,
                       **basics_sources("base_68.npy")),
            WeightFile("base_68_close.npy", "face-crop template (eyes closed)", ATVGNET_BASICS,
                       licence=ATVGNET_LICENCE, optional=True, **basics_sources("base_68_close.npy")),
        ),
    ),
    "davs": ModelSpec(
        name="davs",
        task="talking-face",
        paper="Zhou, Liu, Liu, Luo and Wang, Talking Face Generation by Adversarially "
              "Disentangled Audio-Visual Representation, AAAI 2019",
        pipeline="models.davs.pipeline:DAVSPipeline",
        demo=DEMO_WEIGHTS / "davs",
        commands="models.davs.commands",
        # One released file holds the four inference networks, one entry each (the
        # authors' Test_Gen_Models); the training-only entries are those the authors'
        # train.py saves, should such a file be at hand.
        networks={
            "id_encoder": NetworkSpec("models.davs.networks:IdentityEncoder", DAVS_CHECKPOINT, "ID_encoder"),
            "decoder": NetworkSpec("models.davs.networks:Decoder", DAVS_CHECKPOINT, "Decoder"),
            "mfcc_encoder": NetworkSpec("models.davs.networks:MfccEncoder", DAVS_CHECKPOINT, "mfcc_encoder"),
            "lip_feature_encoder": NetworkSpec("models.davs.networks:LipFeatureEncoder", DAVS_CHECKPOINT,
                                               "lip_feature_encoder"),
            "sequence_discriminator": NetworkSpec("models.davs.networks:SequenceDiscriminator",
                                                  checkpoint_key="netD_mul"),
            "word_classifier": NetworkSpec("models.davs.networks:WordClassifier", checkpoint_key="model_fusion"),
            "domain_discriminator": NetworkSpec("models.davs.networks:DomainDiscriminator",
                                                checkpoint_key="discriminator_audio"),
            "id_word_classifier": NetworkSpec("models.davs.networks:IdWordClassifier",
                                              checkpoint_key="ID_lip_discriminator"),
        },
        files=(
            WeightFile(DAVS_CHECKPOINT, "ID encoder, decoder, MFCC and lip encoders (LRW)", DAVS_SOURCE,
                       licence=DAVS_LICENCE, urls=DAVS_DRIVE, aliases=("checkpoints/" + DAVS_CHECKPOINT,)),
        ),
    ),
    "pg2": ModelSpec(
        name="pg2",
        task="pose-transfer",
        paper="Ma, Jia, Sun, Schiele, Tuytelaars and Van Gool, Pose Guided Person Image Generation, NeurIPS 2017",
        pipeline="models.pg2.pipeline:PG2Pipeline",
        demo=DEMO_WEIGHTS / "pg2",
        commands="models.pg2.commands",
        # The PyTorch port's release (Market-1501, 128 x 64). The authors' TensorFlow
        # checkpoints (Market-1501, DeepFashion) become project folders through
        # ``talkingface weights convert-pg2`` (``models.pg2.convert``).
        networks={
            "g1": NetworkSpec("models.pg2.networks:PoseIntegrationGenerator", "G1.pth"),
            "g2": NetworkSpec("models.pg2.networks:ImageRefinementGenerator", "G2.pth"),
            "discriminator": NetworkSpec("models.pg2.networks:ImageDiscriminator"),
        },
        files=(
            WeightFile("G1.pth", "G1, pose integration (the PyTorch port, Market-1501)", PG2_SOURCE,
                       licence=PG2_LICENCE, urls=PG2_DRIVE, aliases=("weights/G1.pth",)),
            WeightFile("G2.pth", "G2, image refinement (the PyTorch port, Market-1501)", PG2_SOURCE,
                       licence=PG2_LICENCE, urls=PG2_DRIVE, aliases=("weights/G2.pth",)),
        ),
    ),
    "edn": ModelSpec(
        name="edn",
        task="motion-transfer",
        paper="Chan, Ginosar, Zhou and Efros, Everybody Dance Now, ICCV 2019",
        pipeline="models.edn.pipeline:EDNPipeline",
        demo=DEMO_WEIGHTS / "edn",
        commands="models.edn.commands",
        # No release: these are the files pix2pixHD's save_network writes for one target.
        networks={
            "global": NetworkSpec("models.edn.networks:GlobalGenerator", "latest_net_G.pth"),
            "local": NetworkSpec("models.edn.networks:LocalEnhancer"),
            "face": NetworkSpec("models.edn.networks:FaceResidualGenerator", "latest_net_Gface.pth"),
            "face_unet": NetworkSpec("models.edn.networks:FaceUnetGenerator"),
            "discriminator": NetworkSpec("models.edn.networks:MultiscaleDiscriminator"),
            "face_discriminator": NetworkSpec("models.edn.networks:FaceDiscriminator"),
        },
        files=(
            WeightFile("latest_net_G.pth", "generator of one target person (global or local stage)", EDN_SOURCE),
            WeightFile("latest_net_Gface.pth", "face residual generator of that person", EDN_SOURCE, optional=True),
            WeightFile("target_keypoints.npy", "(N, 18, 3) keypoints of the target's frames on EDN's 1080x1920 "
                       "canvas, for the pose normalisation", EDN_SOURCE, optional=True),
        ),
    ),
    # Image generators (task image-generation), in the order dcgan, lapgan, stackgan, sgan,
    # gran, lrgan, ssgan. Each folder's pipeline module documents its system; the networks
    # keep the reference code's names and forward signatures.
    "dcgan": ModelSpec(
        name="dcgan",
        task="image-generation",
        paper="Radford, Metz and Chintala, Unsupervised Representation Learning with Deep Convolutional "
              "Generative Adversarial Networks, ICLR 2016",
        pipeline="models.dcgan.pipeline:DCGANPipeline",
        demo=DEMO_WEIGHTS / "dcgan",
        commands="models.dcgan.commands",
        # pytorch/examples publishes no weights: its dcgan/main.py writes netG_epoch_N.pth and
        # netD_epoch_N.pth each epoch; after its default 25 epochs the last generator is
        # netG_epoch_24.pth (any netG_epoch_N.pth in a folder given as --weights is taken too).
        networks={
            "generator": NetworkSpec("models.dcgan.networks:Generator", "netG_epoch_24.pth"),
            "discriminator": NetworkSpec("models.dcgan.networks:Discriminator"),
        },
        files=(
            WeightFile("netG_epoch_24.pth", "DCGAN generator written by pytorch/examples' dcgan/main.py after its "
                       "25 default epochs, trained by the user", NO_RELEASE.format(name="dcgan") +
                       "; or train with github.com/pytorch/examples dcgan/main.py",
                       licence="the user's own weights (pytorch/examples code: BSD-3-Clause)", optional=True,
                       aliases=("netG.pth",)),
        ),
    ),
    "lapgan": ModelSpec(
        name="lapgan",
        task="image-generation",
        paper="Denton, Chintala, Szlam and Fergus, Deep Generative Image Models using a Laplacian Pyramid of "
              "Adversarial Networks, NeurIPS 2015",
        pipeline="models.lapgan.pipeline:LAPGANPipeline",
        demo=DEMO_WEIGHTS / "lapgan",
        commands="models.lapgan.commands",
        # facebook/eyescream (Torch7) publishes no weights, so there is no file to load and no
        # converter; project folders hold one <name>.safetensors per network. Coarse to fine:
        #   coarse    G_K, fully connected: noise (100) + class one-hot -> 8x8 image
        #             (image_size, channels, noise_dim, classes, hidden; CIFAR-10: 8, 3, 100, 10, 1200)
        #   level1    G_1, convolutional: noise plane + class plane + u(I_2) -> 16x16 residual
        #   level2    G_0, the same at 32x32 (image_size, channels, classes, hidden; 16 or 32, 3, 10, 64)
        #   coarse_d, level1_d, level2_d   their discriminators (training only; D_K hidden 600, D_k 64)
        # classes = 0 is the unconditional model (train_cifar.lua, train_cifar_coarse_to_fine.lua).
        networks={
            "coarse": NetworkSpec("models.lapgan.networks:CoarseGenerator"),
            "level1": NetworkSpec("models.lapgan.networks:LevelGenerator"),
            "level2": NetworkSpec("models.lapgan.networks:LevelGenerator"),
            "coarse_d": NetworkSpec("models.lapgan.networks:CoarseDiscriminator"),
            "level1_d": NetworkSpec("models.lapgan.networks:LevelDiscriminator"),
            "level2_d": NetworkSpec("models.lapgan.networks:LevelDiscriminator"),
        },
        files=(),
    ),
    "stackgan": ModelSpec(
        name="stackgan",
        task="image-generation",
        paper="Zhang, Xu, Li, Zhang, Wang, Huang and Metaxas, StackGAN: Text to Photo-realistic Image Synthesis "
              "with Stacked Generative Adversarial Networks, ICCV 2017; StackGAN++, TPAMI 2018",
        pipeline="models.stackgan.pipeline:StackGANPipeline",
        demo=DEMO_WEIGHTS / "stackgan",
        commands="models.stackgan.commands",
        # The authors' generators, each a plain torch.save of a state dict (v2's with the
        # `module.` prefixes of nn.DataParallel). Constructor arguments as the authors' cfg:
        #   v1_stage1 / v1_stage2  z_dim, condition_dim, gf_dim, text_dim [, r_num]
        #                          (COCO release: 100, 128, 192, 1024, 2; networks.COCO_V1)
        #   v2                     branch_num, z_dim, embedding_dim, gf_dim, r_num, b_condition,
        #                          text_dim (birds: 3, 100, 128, 64, 2, True, 1024; the LSUN /
        #                          ImageNet ones the same with b_condition False)
        networks={
            "v1_stage1": NetworkSpec("models.stackgan.networks:Stage1Generator"),
            "v1_stage2": NetworkSpec("models.stackgan.networks:Stage2Generator", "netG_epoch_90.pth"),
            "v2": NetworkSpec("models.stackgan.networks:GNet", "netG_210000.pth"),
            "v1_stage1_discriminator": NetworkSpec("models.stackgan.networks:Stage1Discriminator"),
            "v1_stage2_discriminator": NetworkSpec("models.stackgan.networks:Stage2Discriminator"),
            "v2_discriminator": NetworkSpec("models.stackgan.networks:DNet"),
            "text_encoder": NetworkSpec("models.stackgan.text:CharCNNRNN"),
        },
        files=(
            WeightFile("netG_epoch_90.pth", "StackGAN-v1 Stage-II generator with its Stage-I (COCO, 256x256, "
                       "text-conditional: 1024-d char-CNN-RNN embeddings)", STACKGAN_V1_SOURCE,
                       licence=STACKGAN_LICENCE + "; trained on MS-COCO", optional=True,
                       urls=("https://drive.google.com/open?id=0B3y_msrWZaXLYjNra2ZSSmtVQlE",),
                       aliases=("models/coco/netG_epoch_90.pth", "coco/netG_epoch_90.pth")),
            WeightFile("netG_210000.pth", "StackGAN-v2 generator (CUB birds, 64/128/256, text-conditional: "
                       "1024-d char-CNN-RNN embeddings)", STACKGAN_V2_SOURCE,
                       licence=STACKGAN_LICENCE + "; trained on CUB-200-2011", optional=True,
                       urls=("https://drive.google.com/open?id=1s5Yf3nFiXx0lltMFOiJWB6s1LP24RcwH",),
                       aliases=("models/birds_3stages/netG_210000.pth", "birds_3stages/netG_210000.pth")),
            WeightFile("netG_600000.pth", "StackGAN-v2 generator (ImageNet dogs, unconditional)", STACKGAN_V2_SOURCE,
                       licence=STACKGAN_LICENCE + "; trained on ImageNet", optional=True,
                       urls=("https://drive.google.com/open?id=1zcwYfvhsKqb8svQDecTbx_mdYy3TG3F0",),
                       aliases=("models/dog_3stages_color/netG_600000.pth", "dog_3stages_color/netG_600000.pth")),
            WeightFile("netG_200000.pth", "StackGAN-v2 generator (ImageNet cats, unconditional)", STACKGAN_V2_SOURCE,
                       licence=STACKGAN_LICENCE + "; trained on ImageNet", optional=True,
                       urls=("https://drive.google.com/open?id=1yPX62c-eCLCNxpziGX9qF_V6Verom3v9",),
                       aliases=("models/cat_3stages_color/netG_200000.pth", "cat_3stages_color/netG_200000.pth")),
            WeightFile("netG_364000.pth", "StackGAN-v2 generator (LSUN bedrooms, unconditional)", STACKGAN_V2_SOURCE,
                       licence=STACKGAN_LICENCE + "; trained on LSUN", optional=True,
                       urls=("https://drive.google.com/open?id=1Kqowg0ZLZbN1ek5N-YqEw9TlZeI3XV-K",),
                       aliases=("models/bedroom_3stages_color/netG_364000.pth",
                                "bedroom_3stages_color/netG_364000.pth")),
            WeightFile("netG_270000.pth", "StackGAN-v2 generator (LSUN churches, unconditional)", STACKGAN_V2_SOURCE,
                       licence=STACKGAN_LICENCE + "; trained on LSUN", optional=True,
                       urls=("https://drive.google.com/open?id=13Pw4PZOkiAM5y_KoOwBzlXK9eQ2hHLfT",),
                       aliases=("models/church_outdoor_3stages_color/netG_270000.pth",
                                "church_outdoor_3stages_color/netG_270000.pth")),
        ),
    ),
    "sgan": ModelSpec(
        name="sgan",
        task="image-generation",
        paper="Huang, Li, Poursaeed, Hopcroft and Belongie, Stacked Generative Adversarial Networks, CVPR 2017",
        pipeline="models.sgan.pipeline:SGANPipeline",
        demo=DEMO_WEIGHTS / "sgan",
        commands="models.sgan.commands",
        # The reference's Lasagne .npz files (arr_0, arr_1, ... in get_all_param_values order)
        # are converted on loading (models.sgan.convert); `talkingface weights convert --model
        # sgan` writes them as a project folder. Networks: E = encoder (conv1, conv2, fc3 = h1,
        # fc4 = y), G1 (z1, y) -> h1, G0 (h1, z0) -> x, D1 / D0 with their Q heads (z_recon).
        networks={
            "encoder": NetworkSpec("models.sgan.networks:Encoder"),
            "g1": NetworkSpec("models.sgan.networks:Generator1"),
            "g0": NetworkSpec("models.sgan.networks:Generator0"),
            "d1": NetworkSpec("models.sgan.networks:Discriminator1"),
            "d0": NetworkSpec("models.sgan.networks:Discriminator0"),
        },
        files=(
            WeightFile("generator.npz", "G1 and G0 trained on CIFAR-10 (Lasagne parameters, 54 arrays)",
                       "cifar/pretrained/generator.npz of github.com/xunhuang1995/SGAN",
                       licence="MIT (the repository's mnist/LICENSE, after OpenAI's Improved GAN); "
                               "trained on CIFAR-10",
                       urls=("https://github.com/xunhuang1995/SGAN/raw/master/cifar/pretrained/generator.npz",),
                       aliases=("cifar/pretrained/generator.npz", "pretrained/generator.npz")),
            WeightFile("encoder.npz", "the pretrained CIFAR-10 encoder E (8 arrays); only training needs it",
                       "cifar/pretrained/encoder.npz of github.com/xunhuang1995/SGAN",
                       "ecf5ed14c217d17ac964befcaed2c87b7ec18eb02568d4c537d178cb7884f95b",
                       licence="MIT (the repository's mnist/LICENSE); trained on CIFAR-10", optional=True,
                       urls=("https://github.com/xunhuang1995/SGAN/raw/master/cifar/pretrained/encoder.npz",),
                       aliases=("cifar/pretrained/encoder.npz", "pretrained/encoder.npz")),
        ),
    ),
    "gran": ModelSpec(
        name="gran",
        task="image-generation",
        paper="Im, Kim, Jiang and Memisevic, Generating Images with Recurrent Adversarial Networks, 2016",
        pipeline="models.gran.pipeline:GRANPipeline",
        demo=DEMO_WEIGHTS / "gran",
        commands="models.gran.commands",
        # The authors' Theano code pickles its whole model object (Python 2 cPickle of a
        # gran.GRAN holding Theano shared variables); models.gran.convert reads such a pickle
        # without Theano, with stubs for their classes and nothing else allowed. Networks
        # (models.gran.networks, layer names those of the reference's attributes):
        #   generator      GRANGenerator (RecGenI28/32/64/128): L0a (noise, BN-linear + tanh),
        #                  L1 (BN-linear + ReLU to the first map), L2.. deconvolutions, the
        #                  encoder's convolutions (L5-L7 at 32x32) and L0b (BN-linear + tanh);
        #                  defaults: CIFAR-10's 32x32, widths 1024/512/256, z 100, T = 5
        #   discriminator  GRANDiscriminator (convnet28/32/64/128): BN convolutions L1.., W
        #                  + hbias (tanh, 100 units), W_y (sigmoid)
        # networks.CONFIGS holds the mnist, cifar10, lsun (64x64) and lsun128 sizes.
        networks={
            "generator": NetworkSpec("models.gran.networks:GRANGenerator"),
            "discriminator": NetworkSpec("models.gran.networks:GRANDiscriminator"),
        },
        files=(
            WeightFile("gran_param_cifar10_ts5_2.save", "GRAN model pickle (CIFAR-10, T = 5), the name the "
                       "authors' inquire_recganI.py and main_granI_cifar10.py give it", GRAN_SOURCE,
                       licence=GRAN_LICENCE, optional=True, urls=GRAN_DROPBOX,
                       aliases=("params/gran_param_cifar10_ts5_2.save",)),
            WeightFile("gran_lsun.save", "GRAN model pickle (LSUN churches 64x64) under a name of the user's: the "
                       "authors' main_granI_lsun.py asks for its path; any *.save in the folder is taken", GRAN_SOURCE,
                       licence=GRAN_LICENCE, optional=True, urls=GRAN_DROPBOX),
        ),
    ),
    "lrgan": ModelSpec(
        name="lrgan",
        task="image-generation",
        paper="Yang, Kannan, Batra and Parikh, LR-GAN: Layered Recursive Generative Adversarial Networks for "
              "Image Generation, ICLR 2017",
        pipeline="models.lrgan.pipeline:LRGANPipeline",
        demo=DEMO_WEIGHTS / "lrgan",
        commands="models.lrgan.commands",
        # No release: the files the reference's train.py saves (<dataset>_netG_s_<session>_epoch_<n>.pth);
        # a folder holding one loads through from_pretrained, `weights convert --model lrgan` exports it.
        networks={
            "generator": NetworkSpec("models.lrgan.networks:LRGANGenerator"),
            "discriminator": NetworkSpec("models.lrgan.networks:LRGANDiscriminator"),
        },
    ),
    "ssgan": ModelSpec(
        name="ssgan",
        task="image-generation",
        paper="Wang and Gupta, Generative Image Modeling using Style and Structure Adversarial Networks, ECCV 2016",
        pipeline="models.ssgan.pipeline:SSGANPipeline",
        demo=DEMO_WEIGHTS / "ssgan",
        commands="models.ssgan.commands",
        # The authors' Torch7 (nngraph) files, read without Lua and converted as they load
        # (models.ssgan.convert; load_network takes convert.load_torch_file's state dicts):
        # "structure" z -> 72x72 normals, "style" (z, 128x128 normals) -> 128x128 image, the
        # discriminators and the normal-classifying FCN (512 -> 32x32 x 40 clusters) for training.
        networks={
            "structure": NetworkSpec("models.ssgan.networks:StructureGenerator", "Structure_GAN.net", "G"),
            "structure_discriminator": NetworkSpec("models.ssgan.networks:StructureDiscriminator",
                                                   "Structure_GAN.net", "D"),
            "style": NetworkSpec("models.ssgan.networks:StyleGenerator", "joint_Style_GAN.net", "G"),
            "style_discriminator": NetworkSpec("models.ssgan.networks:StyleDiscriminator",
                                               "joint_Style_GAN.net", "D"),
            "fcn": NetworkSpec("models.ssgan.networks:NormalFCN", "FCN.net", "FCN"),
        },
        files=(
            WeightFile("joint_SSGAN.net", "Structure-GAN (G1) and Style-GAN (G) after joint learning (NYUv2)",
                       SSGAN_SOURCE, licence=SSGAN_LICENCE, optional=True, aliases=("ssgan_models/joint_SSGAN.net",)),
            WeightFile("Structure_GAN.net", "Structure-GAN G and D (NYUv2 normals, 72x72)", SSGAN_SOURCE,
                       licence=SSGAN_LICENCE, optional=True, aliases=("ssgan_models/Structure_GAN.net",)),
            WeightFile("joint_Style_GAN.net", "Style-GAN G and D trained with the FCN loss, and the FCN",
                       SSGAN_SOURCE, licence=SSGAN_LICENCE, optional=True,
                       aliases=("ssgan_models/joint_Style_GAN.net",)),
            WeightFile("Style_GAN_nofcn.net", "Style-GAN G and D without the FCN loss", SSGAN_SOURCE,
                       licence=SSGAN_LICENCE, optional=True, aliases=("ssgan_models/Style_GAN_nofcn.net",)),
            WeightFile("FCN.net", "surface-normal FCN (40 clusters, 512x512 input)", SSGAN_SOURCE,
                       licence=SSGAN_LICENCE, optional=True, aliases=("ssgan_models/FCN.net",)),
            WeightFile("codebook_40.txt", "the 40 normal clusters the FCN classifies into (training only)",
                       "style-gan-fcn/codebook_40.txt of github.com/xiaolonw/ss-gan", licence=SSGAN_LICENCE,
                       optional=True, urls=(SSGAN_CODEBOOK_URL,), aliases=("style-gan-fcn/codebook_40.txt",)),
        ),
    ),
}


def _import(path):
    if not isinstance(path, str):
        return path
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def register(model: ModelSpec):
    """Add a model at run time (a plug-in); it is then served like the built-in ones."""
    REGISTRY[model.name] = model


def unregister(name):
    REGISTRY.pop(name, None)


def spec(system) -> ModelSpec:
    try:
        return REGISTRY[system]
    except KeyError:
        raise UnknownModel(f"unknown model {system!r}; known: {', '.join(sorted(REGISTRY))}") from None


def load_network(system, network, checkpoint, **config):
    """One network of ``system`` in eval mode, with the authors' forward signature.

    ``checkpoint`` is a path or a state dict in the authors' file format (``module.``
    prefixes allowed), or None for freshly initialised weights. Where the authors keep
    several networks in one file (DAVS), the network's entry is taken from it; its own
    state dict is accepted too. ``config`` goes to the constructor (e.g. ``ngf`` of VG-net).
    """
    model = spec(system)
    if network not in model.networks:
        raise UnknownModel(f"{system} has no network {network!r}; it has {', '.join(model.networks)}")
    entry = model.networks[network]
    net = _import(entry.cls)(**config)
    if checkpoint is not None:
        weights_lib.load_weights(net, checkpoint, name=str(checkpoint) if not isinstance(checkpoint, dict)
                                 else f"{network} state dict", key=entry.checkpoint_key)
    return net.eval()


def resolve_weights(system, weights=None, weights_root=None):
    """Which weights ``load`` uses: ``(kind, folder)``, kind "authors" or "project".

    ``weights`` is a folder to load from and nothing else (the authors' files, or a folder
    this project trained, marked by ``config.json``). Without it the weights folder is
    searched: ``weights_root``, else ``$TALKINGFACE_WEIGHTS_DIR``, else ``./weights``; a
    project folder of ``system`` there, or the authors' complete files, else the demo
    weights shipped with the project. When none is usable the authors' folder is returned,
    so that loading it names the missing files.
    """
    model = spec(system)

    def authors_complete(folder):
        # Every required file, and at least one file: a model whose files are all optional
        # (a choice of releases) needs one of them; a model with none released has none.
        found = [f for f in model.files if weights_lib.locate(f, folder)]
        return bool(found) and all(f in found or f.optional for f in model.files)

    if weights is not None:
        folder = weights_lib.weights_dir(weights)
        return ("project" if _project_of(folder) in (system, "") else "authors"), folder
    folder = weights_lib.weights_dir(weights_root)
    if _project_of(folder) in (system, ""):
        return "project", folder
    if authors_complete(folder):
        return "authors", folder
    if model.demo and (model.demo / "config.json").is_file():
        return "project", model.demo
    return "authors", folder


def default_model(task, preferred=None):
    """The model a request for ``task`` gets when it names none: ``preferred`` if it does the
    task, else the first registered model that does (None when no model does)."""
    if preferred in REGISTRY and REGISTRY[preferred].task == task:
        return preferred
    return next((name for name, model in REGISTRY.items() if model.task == task), None)


def _project_of(folder) -> str | None:
    """The model a project weights folder is for ("" when its config does not say), None when it is none."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    try:
        return str(json.loads(config.read_text()).get("model") or "")
    except (ValueError, OSError, AttributeError):
        return ""


def pipeline_class(system):
    """The pipeline class of ``system``, imported without loading any weights."""
    return _import(spec(system).pipeline)


def accepts_video(system) -> bool:
    """Whether ``system`` reads lips from a driving video (else a video only gives its sound)."""
    return bool(pipeline_class(system).accepts_video)


def declared_options(system) -> dict:
    """{name: Option} of every option a request to ``system`` may carry."""
    return pipeline_class(system).declared_options()


def commands(system) -> dict:
    """{subcommand: Command} the system adds to ``talkingface`` (``models.common.commands``)."""
    module = spec(system).commands
    return importlib.import_module(module).COMMANDS if module else {}


def load(system, weights=None, device="auto", weights_root=None, precision="fp32", **options):
    """The inference pipeline of ``system`` with the weights ``resolve_weights`` picks.

    ``precision`` is "fp32" (the networks as loaded), "int8" or "auto"
    (``models.common.quantize.resolve_precision``) for a model whose pipeline has an int8
    path (``precisions`` lists "int8"); a model without one runs fp32 under "auto" and
    refuses "int8".
    """
    precision = check_precision(precision)
    kind, folder = resolve_weights(system, weights, weights_root)
    pipeline = pipeline_class(system)
    if "int8" in getattr(pipeline, "precisions", ("fp32",)):
        options["precision"] = precision
    elif precision == "int8":
        raise InvalidPrecision(f"{spec(system).name} has no int8 path; precision fp32 or auto")
    if kind == "project":
        return pipeline.from_project(folder, device=device, **options)
    return pipeline.from_pretrained(folder, device=device, **options)


def weights_ready(system, weights=None, weights_root=None):
    """``(kind, folder, missing)``: the weights ``load`` would use, and which files it lacks."""
    kind, folder = resolve_weights(system, weights, weights_root)
    if kind == "project":
        return kind, folder, []
    missing = [f.name for f, path in file_status(system, folder) if path is None and not f.optional]
    return kind, folder, missing


def file_status(system, weights=None):
    """[(WeightFile, path or None)] for every file ``system`` needs, in the weights folder."""
    directory = weights_lib.weights_dir(weights)
    return [(f, weights_lib.locate(f, directory)) for f in spec(system).files]
