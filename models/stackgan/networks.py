"""StackGAN v1 and v2 (StackGAN++) networks, layer for layer as the authors' PyTorch code.

* Zhang, Xu, Li, Zhang, Wang, Huang and Metaxas, "StackGAN: Text to Photo-realistic Image
  Synthesis with Stacked Generative Adversarial Networks", ICCV 2017 (arXiv 1612.03242);
  official code github.com/hanzhanggit/StackGAN-Pytorch (``code/model.py``).
* Zhang et al., "StackGAN++: Realistic Image Synthesis with Stacked Generative Adversarial
  Networks", TPAMI 2018 (arXiv 1710.10916); official code github.com/hanzhanggit/StackGAN-v2
  (``code/model.py``).

Attribute names follow the authors' modules (``ca_net.fc``, ``STAGE1_G.*``, ``h_net1.fc``,
``img_net2.img`` ...) so that their released state dicts load strictly; the constructors
take the authors' config entries as arguments instead of reading a global ``cfg``:

    ==================  ==========================================================
    argument            authors' cfg entry
    ==================  ==========================================================
    z_dim               Z_DIM (v1), GAN.Z_DIM (v2)
    condition_dim       GAN.CONDITION_DIM (v1): N_g, the size of the CA code
    embedding_dim       GAN.EMBEDDING_DIM (v2): the size of the CA code
    gf_dim / df_dim     GAN.GF_DIM / GAN.DF_DIM
    r_num               GAN.R_NUM (residual blocks)
    text_dim            TEXT.DIMENSION (the char-CNN-RNN embedding, 1024)
    branch_num          TREE.BRANCH_NUM (v2: 64, 128, 256 ... outputs)
    b_condition         GAN.B_CONDITION (v2: text-conditional or not)
    ==================  ==========================================================

Conditioning augmentation (Sec. 3.1 of 1612.03242, Eq. 2 of 1710.10916) draws its noise
eps ~ N(0, I) inside ``forward`` from torch's global generator on the CPU, in the order
the authors' code draws it (Stage-II: Stage-I's CA first, then its own), so seeding torch
reproduces the authors' samples; an explicit ``eps`` may be passed instead.

Deviations: none in the layers. ``GNet`` accepts ``branch_num`` 1 to 4 (the authors'
5-branch layout overwrites its fourth stage and is untested by them).
"""

from __future__ import annotations

import torch
import torch.nn as nn

# ---------------------------------------------------------------------------------------
# Published configurations (constructor arguments)

# StackGAN-Pytorch's COCO release netG_epoch_90.pth (cfg/coco_eval.yml): a Stage-II
# generator holding its Stage-I generator.
COCO_V1 = {"z_dim": 100, "condition_dim": 128, "gf_dim": 192, "text_dim": 1024, "r_num": 2}
# StackGAN-v2's releases (cfg/eval_birds.yml, cfg/eval_dog.yml): 3 branches, 64/128/256.
BIRDS_V2 = {"branch_num": 3, "z_dim": 100, "embedding_dim": 128, "gf_dim": 64, "r_num": 2, "b_condition": True,
            "text_dim": 1024}
LSUN_IMAGENET_V2 = {**BIRDS_V2, "b_condition": False}


# ---------------------------------------------------------------------------------------
# Blocks shared by both versions


def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def draw_eps(std: torch.Tensor) -> torch.Tensor:
    """eps ~ N(0, I) shaped like ``std``, from torch's global CPU generator, moved to its device.

    The authors fill a fresh ``FloatTensor(std.size())`` with ``normal_()``; drawing on
    the CPU keeps a seeded run's numbers the same on any device.
    """
    return torch.empty(std.shape, dtype=torch.float32).normal_().to(device=std.device, dtype=std.dtype)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) averaged over elements: the CA regulariser (Eq. 3 of 1612.03242).

    -0.5 * mean(1 + log sigma^2 - mu^2 - sigma^2), as the authors' ``KL_loss``.
    """
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


class GLU(nn.Module):
    """Gated linear unit over channels: x[:, :C/2] * sigmoid(x[:, C/2:]) (StackGAN++)."""

    def forward(self, x):
        channels = x.size(1)
        if channels % 2:
            raise ValueError(f"GLU needs an even number of channels, got {channels}")
        half = channels // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])


class CANet(nn.Module):
    """Conditioning augmentation: text embedding -> (c, mu, logvar), c = mu + sigma * eps.

    v1 (``glu=False``): ``fc`` (text_dim -> 2 c_dim) + ReLU, mu and logvar its two halves.
    v2 (``glu=True``): ``fc`` (text_dim -> 4 c_dim) + GLU, then the two halves.
    """

    def __init__(self, text_dim=1024, c_dim=128, glu=False):
        super().__init__()
        self.t_dim, self.c_dim = text_dim, c_dim
        self.fc = nn.Linear(text_dim, c_dim * (4 if glu else 2), bias=True)
        self.relu = GLU() if glu else nn.ReLU()

    def encode(self, text_embedding):
        x = self.relu(self.fc(text_embedding))
        return x[:, :self.c_dim], x[:, self.c_dim:]

    def reparametrize(self, mu, logvar, eps=None):
        std = torch.exp(0.5 * logvar)
        if eps is None:
            eps = draw_eps(std)
        return eps * std + mu

    def forward(self, text_embedding, eps=None):
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar, eps), mu, logvar


# ---------------------------------------------------------------------------------------
# StackGAN v1 (StackGAN-Pytorch)


def up_block(in_planes, out_planes):
    """v1: nearest x2 upsampling, conv3x3, BatchNorm, ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes),
                         nn.BatchNorm2d(out_planes), nn.ReLU(True))


class ResBlock(nn.Module):
    """v1 residual block: ReLU(x + [conv, BN, ReLU, conv, BN](x))."""

    def __init__(self, channel_num):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num), nn.ReLU(True),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.block(x) + x)


class DGetLogits(nn.Module):
    """v1 discriminator head: (image code 8ndf x 4 x 4 [+ condition]) -> probability (n,)."""

    def __init__(self, ndf, nef, bcondition=True):
        super().__init__()
        self.df_dim, self.ef_dim, self.bcondition = ndf, nef, bcondition
        if bcondition:
            self.outlogits = nn.Sequential(conv3x3(ndf * 8 + nef, ndf * 8), nn.BatchNorm2d(ndf * 8),
                                           nn.LeakyReLU(0.2, inplace=True),
                                           nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())
        else:
            self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def forward(self, h_code, c_code=None):
        if self.bcondition and c_code is not None:
            c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 4, 4)
            h_code = torch.cat((h_code, c_code), 1)            # (n, 8ndf + nef, 4, 4)
        return self.outlogits(h_code).view(-1)


class Stage1Generator(nn.Module):
    """Stage-I generator (the authors' ``STAGE1_G``): text embedding + z -> 64 x 64 image.

    Sec. 3.2 of 1612.03242: c_hat_0 from CA, [c_hat_0, z] -> 4 x 4 x 8gf -> four
    upsamplings -> 3 x 64 x 64, tanh. Its width is ``gf_dim * 8`` (cfg GAN.GF_DIM * 8).

    Args:
        z_dim (int, 100): noise size. condition_dim (int, 128): N_g. gf_dim (int, 128):
        cfg GAN.GF_DIM. text_dim (int, 1024): embedding size.
    """

    def __init__(self, z_dim=100, condition_dim=128, gf_dim=128, text_dim=1024):
        super().__init__()
        self.config = {"z_dim": z_dim, "condition_dim": condition_dim, "gf_dim": gf_dim, "text_dim": text_dim}
        self.gf_dim, self.ef_dim, self.z_dim = gf_dim * 8, condition_dim, z_dim
        ngf = self.gf_dim
        self.ca_net = CANet(text_dim, condition_dim)
        self.fc = nn.Sequential(nn.Linear(z_dim + condition_dim, ngf * 4 * 4, bias=False),
                                nn.BatchNorm1d(ngf * 4 * 4), nn.ReLU(True))
        self.upsample1 = up_block(ngf, ngf // 2)              # -> 8 x 8
        self.upsample2 = up_block(ngf // 2, ngf // 4)         # -> 16 x 16
        self.upsample3 = up_block(ngf // 4, ngf // 8)         # -> 32 x 32
        self.upsample4 = up_block(ngf // 8, ngf // 16)        # -> 64 x 64
        self.img = nn.Sequential(conv3x3(ngf // 16, 3), nn.Tanh())

    def forward(self, text_embedding, noise, eps=None):
        """Returns ``(None, image (n, 3, 64, 64), mu, logvar)`` as the authors' forward."""
        c_code, mu, logvar = self.ca_net(text_embedding, eps)
        h_code = self.fc(torch.cat((noise, c_code), 1)).view(-1, self.gf_dim, 4, 4)
        h_code = self.upsample4(self.upsample3(self.upsample2(self.upsample1(h_code))))
        return None, self.img(h_code), mu, logvar


class Stage1Discriminator(nn.Module):
    """Stage-I discriminator (``STAGE1_D``): 64 x 64 image -> 8ndf x 4 x 4 code; heads apart."""

    def __init__(self, df_dim=64, condition_dim=128):
        super().__init__()
        self.config = {"df_dim": df_dim, "condition_dim": condition_dim}
        ndf = self.df_dim = df_dim
        self.ef_dim = condition_dim
        self.encode_img = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True))
        self.get_cond_logits = DGetLogits(ndf, condition_dim)
        self.get_uncond_logits = None

    def forward(self, image):
        return self.encode_img(image)


class Stage2Generator(nn.Module):
    """Stage-II generator (``STAGE2_G``), its Stage-I generator inside as ``STAGE1_G``.

    Sec. 3.3 of 1612.03242: the Stage-I image is encoded to 4gf x 16 x 16, joined with
    the spatially replicated CA code c_hat, ``r_num`` residual blocks, four upsamplings
    -> 3 x 256 x 256. Stage-I stays frozen (its parameters do not require gradients).

    Args:
        as ``Stage1Generator``, and r_num (int, 4): residual blocks (COCO release: 2).
    """

    def __init__(self, z_dim=100, condition_dim=128, gf_dim=128, text_dim=1024, r_num=4):
        super().__init__()
        self.config = {"z_dim": z_dim, "condition_dim": condition_dim, "gf_dim": gf_dim, "text_dim": text_dim,
                       "r_num": r_num}
        self.gf_dim, self.ef_dim, self.z_dim = gf_dim, condition_dim, z_dim
        self.STAGE1_G = Stage1Generator(z_dim, condition_dim, gf_dim, text_dim)
        self.STAGE1_G.requires_grad_(False)
        ngf = gf_dim
        self.ca_net = CANet(text_dim, condition_dim)
        self.encoder = nn.Sequential(
            conv3x3(3, ngf), nn.ReLU(True),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.hr_joint = nn.Sequential(conv3x3(condition_dim + ngf * 4, ngf * 4), nn.BatchNorm2d(ngf * 4),
                                      nn.ReLU(True))
        self.residual = nn.Sequential(*[ResBlock(ngf * 4) for _ in range(r_num)])
        self.upsample1 = up_block(ngf * 4, ngf * 2)           # -> 32 x 32
        self.upsample2 = up_block(ngf * 2, ngf)               # -> 64 x 64
        self.upsample3 = up_block(ngf, ngf // 2)              # -> 128 x 128
        self.upsample4 = up_block(ngf // 2, ngf // 4)         # -> 256 x 256
        self.img = nn.Sequential(conv3x3(ngf // 4, 3), nn.Tanh())

    def forward(self, text_embedding, noise, eps=None):
        """Returns ``(stage-I image 64 x 64, image 256 x 256, mu, logvar)`` as the authors' forward.

        ``eps``: None (drawn: Stage-I's first, then Stage-II's) or a pair of CA noises.
        """
        eps1, eps2 = eps if eps is not None else (None, None)
        _, stage1_img, _, _ = self.STAGE1_G(text_embedding, noise, eps1)
        stage1_img = stage1_img.detach()
        encoded_img = self.encoder(stage1_img)                # (n, 4gf, 16, 16)
        c_code, mu, logvar = self.ca_net(text_embedding, eps2)
        c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 16, 16)
        h_code = self.residual(self.hr_joint(torch.cat([encoded_img, c_code], 1)))
        h_code = self.upsample4(self.upsample3(self.upsample2(self.upsample1(h_code))))
        return stage1_img, self.img(h_code), mu, logvar


class Stage2Discriminator(nn.Module):
    """Stage-II discriminator (``STAGE2_D``): 256 x 256 image -> 8ndf x 4 x 4; cond. and uncond. heads."""

    def __init__(self, df_dim=64, condition_dim=128):
        super().__init__()
        self.config = {"df_dim": df_dim, "condition_dim": condition_dim}
        ndf = self.df_dim = df_dim
        self.ef_dim = condition_dim

        def down(cin, cout):
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]

        self.encode_img = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),   # 128
            *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8),     # 64, 32, 16
            *down(ndf * 8, ndf * 16), *down(ndf * 16, ndf * 32),                       # 8, 4
            conv3x3(ndf * 32, ndf * 16), nn.BatchNorm2d(ndf * 16), nn.LeakyReLU(0.2, inplace=True),
            conv3x3(ndf * 16, ndf * 8), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True))
        self.get_cond_logits = DGetLogits(ndf, condition_dim, bcondition=True)
        self.get_uncond_logits = DGetLogits(ndf, condition_dim, bcondition=False)

    def forward(self, image):
        return self.encode_img(image)


# ---------------------------------------------------------------------------------------
# StackGAN v2 (StackGAN++)


def up_block_glu(in_planes, out_planes):
    """v2: nearest x2 upsampling, conv3x3 to 2 out, BatchNorm, GLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes * 2),
                         nn.BatchNorm2d(out_planes * 2), GLU())


def block3x3_glu(in_planes, out_planes):
    """v2 (the authors' ``Block3x3_relu``): conv3x3 to 2 out, BatchNorm, GLU."""
    return nn.Sequential(conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), GLU())


class ResBlockGLU(nn.Module):
    """v2 residual block: x + [conv, BN, GLU, conv, BN](x) (no final activation)."""

    def __init__(self, channel_num):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num * 2), nn.BatchNorm2d(channel_num * 2), GLU(),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))

    def forward(self, x):
        return self.block(x) + x


class InitStageG(nn.Module):
    """``INIT_STAGE_G``: [c, z] (or z) -> ngf x 4 x 4 -> four GLU upsamplings -> ngf/16 x 64 x 64."""

    def __init__(self, ngf, in_dim):
        super().__init__()
        self.gf_dim, self.in_dim = ngf, in_dim
        self.fc = nn.Sequential(nn.Linear(in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2),
                                GLU())
        self.upsample1 = up_block_glu(ngf, ngf // 2)
        self.upsample2 = up_block_glu(ngf // 2, ngf // 4)
        self.upsample3 = up_block_glu(ngf // 4, ngf // 8)
        self.upsample4 = up_block_glu(ngf // 8, ngf // 16)

    def forward(self, z_code, c_code=None):
        in_code = z_code if c_code is None else torch.cat((c_code, z_code), 1)
        out_code = self.fc(in_code).view(-1, self.gf_dim, 4, 4)
        return self.upsample4(self.upsample3(self.upsample2(self.upsample1(out_code))))


class NextStageG(nn.Module):
    """``NEXT_STAGE_G``: [replicated code, h] -> joint conv -> residual blocks -> x2 (ngf/2)."""

    def __init__(self, ngf, ef_dim, num_residual=2):
        super().__init__()
        self.gf_dim, self.ef_dim, self.num_residual = ngf, ef_dim, num_residual
        self.jointConv = block3x3_glu(ngf + ef_dim, ngf)
        self.residual = nn.Sequential(*[ResBlockGLU(ngf) for _ in range(num_residual)])
        self.upsample = up_block_glu(ngf, ngf // 2)

    def forward(self, h_code, c_code):
        s_size = h_code.size(2)
        c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, s_size, s_size)
        out_code = self.jointConv(torch.cat((c_code, h_code), 1))    # (n, ngf, s, s)
        return self.upsample(self.residual(out_code))


class GetImageG(nn.Module):
    """``GET_IMAGE_G``: hidden features -> RGB in [-1, 1] (conv3x3, tanh)."""

    def __init__(self, ngf):
        super().__init__()
        self.gf_dim = ngf
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code):
        return self.img(h_code)


class GNet(nn.Module):
    """StackGAN++ tree generator (the authors' ``G_NET``): one image a branch, 64 x 2^i.

    Sec. 4 of 1710.10916: h_0 = F_0(z, c) (or F_0(z) unconditional), h_i = F_i(h_{i-1},
    c) (z in place of c when unconditional), x_i = G_i(h_i).

    Args:
        branch_num (int, 3): branches (1 to 4). z_dim (int, 100). embedding_dim (int, 128):
        CA code size. gf_dim (int, 64). r_num (int, 2): residual blocks of each next
        stage. b_condition (bool, False): text-conditional. text_dim (int, 1024).
    """

    def __init__(self, branch_num=3, z_dim=100, embedding_dim=128, gf_dim=64, r_num=2, b_condition=False,
                 text_dim=1024):
        super().__init__()
        if not 1 <= branch_num <= 4:
            raise ValueError(f"branch_num must be 1 to 4, got {branch_num}")
        self.config = {"branch_num": branch_num, "z_dim": z_dim, "embedding_dim": embedding_dim, "gf_dim": gf_dim,
                       "r_num": r_num, "b_condition": b_condition, "text_dim": text_dim}
        self.gf_dim, self.branch_num, self.b_condition = gf_dim, branch_num, b_condition
        ef_dim = embedding_dim if b_condition else z_dim
        if b_condition:
            self.ca_net = CANet(text_dim, embedding_dim, glu=True)
        self.h_net1 = InitStageG(gf_dim * 16, z_dim + embedding_dim if b_condition else z_dim)
        self.img_net1 = GetImageG(gf_dim)
        if branch_num > 1:
            self.h_net2 = NextStageG(gf_dim, ef_dim, r_num)
            self.img_net2 = GetImageG(gf_dim // 2)
        if branch_num > 2:
            self.h_net3 = NextStageG(gf_dim // 2, ef_dim, r_num)
            self.img_net3 = GetImageG(gf_dim // 4)
        if branch_num > 3:
            self.h_net4 = NextStageG(gf_dim // 4, ef_dim, num_residual=1)
            self.img_net4 = GetImageG(gf_dim // 8)

    def forward(self, z_code, text_embedding=None, eps=None):
        """Returns ``([image per branch, coarse to fine], mu, logvar)``; mu, logvar None unconditional."""
        if self.b_condition and text_embedding is not None:
            c_code, mu, logvar = self.ca_net(text_embedding, eps)
        else:
            c_code, mu, logvar = z_code, None, None
        h_code = self.h_net1(z_code, c_code if self.b_condition else None)
        fake_imgs = [self.img_net1(h_code)]
        for i in range(2, self.branch_num + 1):
            h_code = getattr(self, f"h_net{i}")(h_code, c_code)
            fake_imgs.append(getattr(self, f"img_net{i}")(h_code))
        return fake_imgs, mu, logvar


def leaky_block3x3(in_planes, out_planes):
    """v2 discriminator: conv3x3, BatchNorm, LeakyReLU 0.2."""
    return nn.Sequential(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True))


def down_block(in_planes, out_planes):
    """v2 discriminator: 4x4 stride-2 conv, BatchNorm, LeakyReLU 0.2."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False), nn.BatchNorm2d(out_planes),
                         nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times(ndf):
    """v2 discriminator trunk: four stride-2 convolutions -> 8ndf x size/16."""
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True))


class DNet(nn.Module):
    """StackGAN++ discriminator of one branch (``D_NET64``, ``D_NET128``, ``D_NET256``, ``D_NET512``).

    Returns ``[conditional probability, unconditional probability]`` when ``b_condition``
    (Eq. 5-6 of 1710.10916: the joint conditional and unconditional loss), else
    ``[probability]``.

    Args:
        size (int, 64): the branch's image size. df_dim (int, 64). embedding_dim (int, 128).
        b_condition (bool, False).
    """

    def __init__(self, size=64, df_dim=64, embedding_dim=128, b_condition=False):
        super().__init__()
        if size not in (64, 128, 256, 512):
            raise ValueError(f"size must be 64, 128, 256 or 512, got {size}")
        self.config = {"size": size, "df_dim": df_dim, "embedding_dim": embedding_dim, "b_condition": b_condition}
        ndf = self.df_dim = df_dim
        self.ef_dim, self.b_condition = embedding_dim, b_condition
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.extra = []                           # names of the layers after the trunk, in order
        if size >= 128:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.extra.append("img_code_s32")
        if size >= 256:
            self.img_code_s64 = down_block(ndf * 16, ndf * 32)
            self.extra.append("img_code_s64")
        if size >= 512:
            self.img_code_s128 = down_block(ndf * 32, ndf * 64)
            self.extra.append("img_code_s128")
        # then 3x3 blocks halving the channels back to 8ndf, named after the last scale
        scale = {128: "s32", 256: "s64", 512: "s128"}.get(size)
        channels = ndf * 8 * (size // 64)
        k = 1
        while channels > ndf * 8:
            name = f"img_code_{scale}_{k}"
            setattr(self, name, leaky_block3x3(channels, channels // 2))
            self.extra.append(name)
            channels //= 2
            k += 1
        self.logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())
        if b_condition:
            self.jointConv = leaky_block3x3(ndf * 8 + embedding_dim, ndf * 8)
            self.uncond_logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def forward(self, x_var, c_code=None):
        x_code = self.img_code_s16(x_var)
        for name in self.extra:
            x_code = getattr(self, name)(x_code)              # -> (n, 8ndf, 4, 4)
        if self.b_condition and c_code is not None:
            c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 4, 4)
            h_c_code = self.jointConv(torch.cat((c_code, x_code), 1))
        else:
            h_c_code = x_code
        output = self.logits(h_c_code)
        if self.b_condition:
            return [output.view(-1), self.uncond_logits(x_code).view(-1)]
        return [output.view(-1)]
